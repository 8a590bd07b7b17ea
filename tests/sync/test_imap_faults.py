"""IMAP faults against a real Dovecot and a real PostgreSQL: connections that end without a
word, folders renamed into a synchronized name, counts across reconnects and signals, a
server that wants TLS before login, and what the user reads while it goes wrong."""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.helpers.dovecot import DovecotServer, ImapAccount, imap_quote, iter_generated_messages
from tests.helpers.mail import make_message
from tests.helpers.proxy import TcpProxy
from tests.sync.test_imap_sync import Recorder, account_for, counts, key, make_sync, run_once
from tests.sync.test_sync_faults import start_cli, stored, sync_args
from xtmail.app import cli
from xtmail.sync.db.folder_state import FolderState
from xtmail.sync.errors import ConfigError, TransientImapError
from xtmail.sync.imap.account import AccountSync
from xtmail.sync.imap.connection import FolderStatus, ImapConnection
from xtmail.sync.imap.credentials import Credential
from xtmail.sync.imap.folder_sync import _identity, _renumbered, _unchanged
from xtmail.sync.imap.settings import AuthMethod, Security


def wait_until(predicate: object, timeout: float, message: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, message
        time.sleep(0.02)


@pytest.fixture
def proxy(dovecot: DovecotServer) -> Iterator[TcpProxy]:
    """A proxy in front of the IMAPS port: the certificate names 127.0.0.1 too."""
    with TcpProxy(dovecot.host, dovecot.imaps_port) as running:
        yield running


def eml_count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM xtbatch.eml").fetchone()
    return int(row[0]) if row else 0


def printed_count(out: str, what: str = "imported") -> int:
    match = re.search(rf"^{what}: (\d+)$", out, re.MULTILINE)
    assert match is not None, out
    return int(match.group(1))


# -- the proxy helper itself ---------------------------------------------------------------------


def test_proxy_forwards_cuts_stalls_blackholes_and_refuses(
    dovecot: DovecotServer, proxy: TcpProxy
) -> None:
    def greeting(timeout: float = 2.0) -> bytes:
        with socket.create_connection((proxy.host, proxy.port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4)  # the TLS port: the server waits for the client's hello

    # Forwarding: a TLS login through the proxy works and the certificate verifies.
    import imaplib
    client = imaplib.IMAP4_SSL(proxy.host, proxy.port, ssl_context=dovecot.ssl_context(),
                               timeout=5)
    wait_until(lambda: proxy.connections == 1, 5, "no connection through the proxy")
    proxy.cut()
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        client.noop()
    client.shutdown()
    assert proxy.connections == 0
    proxy.stall()
    with pytest.raises(TimeoutError):
        imaplib.IMAP4_SSL(proxy.host, proxy.port, ssl_context=dovecot.ssl_context(),
                          timeout=0.5)
    proxy.resume()
    proxy.blackhole()
    with pytest.raises(TimeoutError):
        greeting(0.3)
    proxy.resume()
    proxy.refuse()
    with pytest.raises(ConnectionRefusedError):
        greeting()
    proxy.accept()
    imaplib.IMAP4_SSL(proxy.host, proxy.port, ssl_context=dovecot.ssl_context(),
                      timeout=5).logout()


# -- item: a connection that ends during IDLE --------------------------------------------------


def watch_in_thread(sync: AccountSync, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=sync.watch, name="test-watch")
    thread.start()
    return thread


def stop_watch(sync: AccountSync, stop: threading.Event, thread: threading.Thread) -> None:
    stop.set()
    thread.join(15)
    sync.close()
    assert not thread.is_alive()


def test_imap_process_killed_during_idle_is_noticed_at_once_without_spinning(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str, conn: psycopg.Connection,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(3, prefix="kill"))
    stop = threading.Event()
    recorder = Recorder()
    # A poll interval far beyond the test's patience: only noticing the end can save it.
    sync = make_sync(db_dsn, dovecot, imap_user, stop=stop, listener=recorder,
                     poll_interval=600.0)
    thread = watch_in_thread(sync, stop)
    try:
        wait_until(lambda: eml_count(conn) == 3, 20, "first pass did not finish")
        dovecot.wait_for_idle(imap_user.user)
        cpu_before, wall_before = time.process_time(), time.monotonic()
        # No BYE: the process serving the session dies (a crash, an out-of-memory kill).
        assert dovecot.kill_sessions(imap_user.user) == 1
        dovecot.append(imap_user.user, imap_user.password, "INBOX",
                       make_message(subject="after the kill"))
        wait_until(lambda: eml_count(conn) == 4, 15, "mail appended after the kill not stored")
        # Back in IDLE on a new connection; then a quiet second in it.
        dovecot.wait_for_idle(imap_user.user)
        time.sleep(1.0)
        cpu = time.process_time() - cpu_before
        wall = time.monotonic() - wall_before
    finally:
        stop_watch(sync, stop, thread)
    # A spinning wait burns a core for all of it; a quiet one a small part (the import and
    # the reconnect included, in every thread of this process).
    assert cpu < 0.5 * wall, (cpu, wall)
    assert any("connection lost while waiting for new mail" in s for s in recorder.statuses)


def test_connection_cut_during_idle_reconnects_through_the_proxy(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str, conn: psycopg.Connection,
    proxy: TcpProxy,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(2, prefix="cut"))
    stop = threading.Event()
    sync = make_sync(db_dsn, dovecot, imap_user, stop=stop, poll_interval=600.0,
                     account_changes={"host": proxy.host, "port": proxy.port})
    thread = watch_in_thread(sync, stop)
    try:
        wait_until(lambda: eml_count(conn) == 2, 20, "first pass did not finish")
        dovecot.wait_for_idle(imap_user.user)
        accepted = proxy.accepted
        proxy.cut()
        dovecot.append(imap_user.user, imap_user.password, "INBOX", make_message())
        wait_until(lambda: eml_count(conn) == 3, 15, "mail appended after the cut not stored")
        assert proxy.accepted > accepted
    finally:
        stop_watch(sync, stop, thread)


def test_stalled_connection_during_idle_recovers_within_the_poll_interval(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str, conn: psycopg.Connection,
    proxy: TcpProxy,
) -> None:
    # A link that dies silently (no end of file, nothing arrives): the IDLE ends at the poll
    # interval, its DONE goes unanswered within the timeout, and the sync reconnects.
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(2, prefix="st"))
    stop = threading.Event()
    recorder = Recorder()
    sync = make_sync(db_dsn, dovecot, imap_user, stop=stop, listener=recorder,
                     poll_interval=1.0,
                     account_changes={"host": proxy.host, "port": proxy.port, "timeout": 1.0})
    thread = watch_in_thread(sync, stop)
    try:
        wait_until(lambda: eml_count(conn) == 2, 20, "first pass did not finish")
        dovecot.wait_for_idle(imap_user.user)
        proxy.stall()
        dovecot.append(imap_user.user, imap_user.password, "INBOX", make_message())
        wait_until(lambda: any("timed out" in s for s in recorder.statuses), 15,
                   "the stalled connection was not given up")
        assert eml_count(conn) == 2
        proxy.resume()
        wait_until(lambda: eml_count(conn) == 3, 15, "mail not stored after the stall ended")
    finally:
        proxy.resume()
        stop_watch(sync, stop, thread)


def test_idle_raises_at_once_when_the_connection_ends(
    dovecot: DovecotServer, imap_user: ImapAccount,
) -> None:
    imap = ImapConnection(account_for(dovecot, imap_user.user),
                          Credential(AuthMethod.PASSWORD, imap_user.password))
    try:
        imap.examine("INBOX")
        killer = threading.Timer(0.5, dovecot.kill_sessions, (imap_user.user,))
        killer.start()
        started = time.monotonic()
        with pytest.raises(TransientImapError, match="ended without a word"):
            imap.idle(60.0, threading.Event())
        killer.join()
        assert time.monotonic() - started < 5
    finally:
        imap.close()


@pytest.fixture(scope="module")
def plain_dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    """A Dovecot that takes logins without TLS: IDLE over a plain socket, whose "nothing
    to read now" looks like its end to a careless reader."""
    with DovecotServer(tmp_path_factory.mktemp("dovecot-plain"), plaintext_auth=True) as server:
        yield server


def test_idle_over_a_plain_socket_tells_new_mail_from_the_end(
    plain_dovecot: DovecotServer,
) -> None:
    server = plain_dovecot
    server.add_user("plain", "secret")
    account = account_for(server, "plain", security=Security.NONE, port=server.imap_port,
                          ca_file="")
    imap = ImapConnection(account, Credential(AuthMethod.PASSWORD, "secret"))
    try:
        imap.examine("INBOX")
        # Quiet: the whole timeout passes, and no end is imagined.
        started = time.monotonic()
        assert imap.idle(0.6, threading.Event()) is False
        assert time.monotonic() - started >= 0.55
        appender = threading.Timer(0.3, server.append,
                                   ("plain", "secret", "INBOX", make_message()))
        appender.start()
        assert imap.idle(20.0, threading.Event()) is True
        appender.join()
        killer = threading.Timer(0.3, server.kill_sessions, ("plain",))
        killer.start()
        started = time.monotonic()
        with pytest.raises(TransientImapError, match="ended without a word"):
            imap.idle(60.0, threading.Event())
        killer.join()
        assert time.monotonic() - started < 5
    finally:
        imap.close()


# -- item: a folder renamed into a synchronized name ---------------------------------------------


def folder_messages(dovecot: DovecotServer, account: ImapAccount,
                    folder: str) -> dict[int, bytes]:
    """UID -> raw bytes of every message of ``folder``, as the server has them now."""
    with dovecot.login(account.user, account.password) as imap:
        imap.select(imap_quote(folder), readonly=True)
        typ, data = imap.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
        assert typ == "OK"
    found: dict[int, bytes] = {}
    for part in data:
        if isinstance(part, tuple):
            uid = re.search(rb"UID (\d+)", part[0])
            assert uid is not None
            found[int(uid.group(1))] = part[1]
    return found


def stored_locations(conn: psycopg.Connection, account: str, folder: str) -> dict[int, bytes]:
    """UID -> the bytes of the message each location row of ``folder`` points at."""
    rows = conn.execute(
        """SELECT loc_uid, coalesce(loc_raw, eml_msg) FROM xtmail.location
             JOIN xtbatch.eml ON eml_id = loc_eml_id
            WHERE loc_account = %s AND loc_mailbox = %s""", (account, folder)).fetchall()
    return {int(uid): bytes(raw) for uid, raw in rows}


def uidvalidity_of(dovecot: DovecotServer, account: ImapAccount, folder: str) -> int:
    with dovecot.login(account.user, account.password) as imap:
        typ, data = imap.status(imap_quote(folder), "(UIDVALIDITY)")
    match = re.search(rb"UIDVALIDITY (\d+)", data[0] or b"")
    assert typ == "OK" and match is not None
    return int(match.group(1))


def test_folders_swapped_with_the_same_uidvalidity_are_rescanned(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str, conn: psycopg.Connection,
) -> None:
    user = imap_user
    dovecot.seed_maildir(user.user, "Orders", iter_generated_messages(30, prefix="orders"))
    dovecot.seed_maildir(user.user, "Quotes", iter_generated_messages(5, prefix="quotes"))
    account = key(dovecot, user)
    folders = ("Orders", "Quotes")
    assert run_once(make_sync(db_dsn, dovecot, user, folders=folders)).imported == 35
    # Swap the names. Dovecot keeps each folder's UIDVALIDITY on RENAME, so the folder now
    # called Orders shows the old Quotes' UIDVALIDITY; Cyrus can give both the same one.
    # Record that in the stored state, as a Cyrus server's numbers would have it.
    with dovecot.login(user.user, user.password) as imap:
        for old, new in (("Orders", "Swap"), ("Quotes", "Orders"), ("Swap", "Quotes")):
            assert imap.rename(imap_quote(old), imap_quote(new))[0] == "OK"
    for folder in folders:
        uidvalidity = uidvalidity_of(dovecot, user, folder)
        conn.execute("UPDATE xtmail.folder_state SET fs_uidvalidity = %s "
                     "WHERE fs_account = %s AND fs_mailbox = %s", (uidvalidity, account, folder))
        conn.execute("UPDATE xtmail.location SET loc_uidvalidity = %s "
                     "WHERE loc_account = %s AND loc_mailbox = %s", (uidvalidity, account, folder))
    for n in range(3):
        dovecot.append(user.user, user.password, "Orders",
                       make_message(subject=f"new order {n}"))
    recorder = Recorder()
    result = run_once(make_sync(db_dsn, dovecot, user, folders=("Orders",), listener=recorder))
    assert result.error is None
    # Orders now holds 5 + 3 messages and hands out UID 9 next, below the 30 stored: the
    # folder under that name is another one. Rescanned: the 3 new ones are imported, and
    # the 5 old ones are found stored.
    (orders,) = result.folders
    assert (orders.imported, orders.already_present, orders.rescanned) == (3, 5, True)
    assert any("another folder has taken this name" in s for s in recorder.statuses)
    assert stored_locations(conn, account, "Orders") == folder_messages(dovecot, user, "Orders")
    assert eml_count(conn) == 38
    # Quotes now holds the 30 old orders and hands out UID 31 next, above the 5 stored:
    # the counters cannot tell, the header of the last stored UID does (Dovecot offers no
    # MAILBOXID). Rescanned: nothing new, and every location row names the right message.
    dovecot.append(user.user, user.password, "Quotes", make_message(subject="new quote"))
    result = run_once(make_sync(db_dsn, dovecot, user, folders=("Quotes",), listener=recorder))
    (quotes,) = result.folders
    assert (quotes.imported, quotes.already_present, quotes.rescanned) == (1, 30, True)
    assert any("UID 5 is another message now" in s for s in recorder.statuses)
    assert stored_locations(conn, account, "Quotes") == folder_messages(dovecot, user, "Quotes")
    assert eml_count(conn) == 39
    # And the next passes find both unchanged.
    again = run_once(make_sync(db_dsn, dovecot, user, folders=folders))
    assert [f.skipped for f in again.folders] == ["unchanged", "unchanged"]


def test_a_changed_mailboxid_or_a_lower_uidnext_mean_another_folder() -> None:
    # Dovecot 2.3 offers no OBJECTID (STATUS MAILBOXID is "Invalid status item"): the
    # MAILBOXID branch is checked on the decision itself.
    state = FolderState(uidvalidity=7, last_uid=30, highestmodseq=100, mailboxid="F1")
    same = FolderStatus(7, 31, 30, 100, "F1")
    assert _renumbered(state, same) is None and _unchanged(state, same)
    moved = FolderStatus(7, 40, 39, 100, "F2")  # bigger, same counters: only the id tells
    assert "MAILBOXID" in (_renumbered(state, moved) or "")
    assert not _unchanged(state, moved)
    lower = FolderStatus(7, 9, 8, 100, None)  # HIGHESTMODSEQ equal by chance
    assert "next UID 9" in (_renumbered(state, lower) or "")
    assert not _unchanged(state, lower)
    assert "UIDVALIDITY 7 became 8" in (_renumbered(state, FolderStatus(8, 31, 30, 100)) or "")
    # A server that does not report UIDNEXT (0) is not taken for a renumbering.
    assert _renumbered(state, FolderStatus(7, 0, 30, None)) is None


def test_a_message_served_with_other_bytes_keeps_its_identity() -> None:
    stored = make_message(subject="Order 4711 confirmed", message_id="<a@example.com>")
    # The same message rebuilt by a server: other folding, other headers around it.
    rebuilt = stored.replace(b"Subject: Order 4711",
                             b"X-Server: rebuilt\r\nSubject:\r\n Order 4711")
    assert rebuilt != stored
    assert _identity(rebuilt) == _identity(stored)
    other = make_message(subject="Order 4711 confirmed", message_id="<b@example.com>")
    assert _identity(other) != _identity(stored)


# -- item: counts that say what was committed ----------------------------------------------------


def test_summary_counts_the_attempt_before_a_reconnect(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str, conn: psycopg.Connection,
    proxy: TcpProxy, capsys: pytest.CaptureFixture[str],
) -> None:
    total = 1200
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(total, prefix="rc"))
    args = sync_args(dovecot, imap_user, db_dsn, "--batch-size", "50", "--password-env",
                     "XTMAIL_RC_PW")
    args[args.index("--host") + 1] = proxy.host
    args[args.index("--port") + 1] = str(proxy.port)
    cut_at: list[int] = []

    def cutter() -> None:
        with psycopg.connect(db_dsn, autocommit=True) as watcher:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                done = stored(watcher)
                if done >= 200:
                    proxy.cut()
                    cut_at.append(done)
                    return
                time.sleep(0.005)

    thread = threading.Thread(target=cutter)
    thread.start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XTMAIL_RC_PW", imap_user.password)
        code = cli.main([*args, "--quiet"])
    thread.join()
    out = capsys.readouterr().out
    assert code == cli.EXIT_OK, out
    assert cut_at and cut_at[0] < total, "the cut came too late to test anything"
    assert proxy.accepted >= 2
    assert printed_count(out) == eml_count(conn) == total
    assert f"INBOX: {total} new, 0 already stored" in out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_sync_prints_what_it_committed(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str, conn: psycopg.Connection,
    sig: signal.Signals,
) -> None:
    total = 3000
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(total, prefix="in"))
    proc = start_cli(sync_args(dovecot, imap_user, db_dsn, "--batch-size", "50"),
                     imap_user.password)
    deadline = time.monotonic() + 60
    while stored(conn) < 300:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.005)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == cli.EXIT_INTERRUPTED, err.decode()
    text = out.decode()
    assert "Traceback" not in err.decode()
    assert 300 <= printed_count(text) == eml_count(conn) < total, text
    assert f"interrupted: {printed_count(text)} messages saved" in err.decode()


# -- item: a server that wants TLS before login ------------------------------------------------


def test_login_disabled_before_tls_is_a_settings_error(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The STARTTLS port, unencrypted: Dovecot announces LOGINDISABLED there (the client
    # comes from another address than the server's, so the connection counts as insecure).
    with pytest.raises(ConfigError, match="only over an encrypted connection") as caught:
        ImapConnection(account_for(dovecot, imap_user.user, security=Security.NONE,
                                   port=dovecot.imap_port),
                       Credential(AuthMethod.PASSWORD, imap_user.password))
    assert "STARTTLS" in caught.value.hint
    args = sync_args(dovecot, imap_user, db_dsn, "--security", "none", "--password-env",
                     "XTMAIL_LD_PW")
    args[args.index("--port") + 1] = str(dovecot.imap_port)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XTMAIL_LD_PW", imap_user.password)
        assert cli.main([*args, "--quiet"]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "only over an encrypted connection" in err and "refused the login" not in err


# -- item: what the user reads -------------------------------------------------------------------


def test_server_responses_are_text_not_bytes_literals(
    dovecot: DovecotServer, imap_user: ImapAccount,
) -> None:
    with (
        ImapConnection(account_for(dovecot, imap_user.user),
                       Credential(AuthMethod.PASSWORD, imap_user.password)) as imap,
        pytest.raises(ConfigError) as caught,
    ):
        imap.examine("No/Such")
    text = str(caught.value)
    assert "Mailbox doesn't exist" in text
    assert "b'" not in text and "[" not in text


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.2", 0))
        return int(sock.getsockname()[1])


def test_refused_port_says_what_it_does_while_retrying(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = closed_port()
    args = sync_args(dovecot, imap_user, db_dsn, "--retries", "2", "--password-env",
                     "XTMAIL_RF_PW")
    args[args.index("--port") + 1] = str(port)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XTMAIL_RF_PW", imap_user.password)
        assert cli.main(args) == cli.EXIT_NETWORK
        err = capsys.readouterr().err
        # Without --verbose: one line per retry, saying what failed and what comes next.
        lines = [line for line in err.splitlines() if "retrying in" in line]
        assert len(lines) == 2, err
        assert f"Cannot reach 127.0.0.2:{port} (connection refused)" in lines[0]
        assert "(attempt 2 of 3)" in lines[0] and "(attempt 3 of 3)" in lines[1]
        # It never connected: not "connection lost", with --verbose neither.
        assert cli.main([*args, "--verbose"]) == cli.EXIT_NETWORK
        assert "connection lost" not in capsys.readouterr().err
        # --quiet: only the final error.
        assert cli.main([*args, "--quiet"]) == cli.EXIT_NETWORK
        assert "retrying in" not in capsys.readouterr().err


def test_unknown_host_stops_at_once_with_a_hint(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = sync_args(dovecot, imap_user, db_dsn, "--password-env", "XTMAIL_UH_PW")
    args[args.index("--host") + 1] = "no-such-host.invalid"  # RFC 2606: never resolves
    started = time.monotonic()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XTMAIL_UH_PW", imap_user.password)
        assert cli.main(args) == cli.EXIT_CONFIG
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err
    assert "no-such-host.invalid" in err and "Check the IMAP server's host name" in err
    assert "retrying" not in err


def test_renumbering_notice_is_silent_with_quiet(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str, conn: psycopg.Connection,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(5, prefix="uv"))
    args = sync_args(dovecot, imap_user, db_dsn)
    proc = start_cli(args, imap_user.password)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    dovecot.set_uidvalidity_change(imap_user.user, "INBOX")
    proc = start_cli(args, imap_user.password)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert "INBOX: 0 new, 5 already stored after the server renumbered it" in out.decode()
    assert err.decode() == ""
    assert counts(conn, key(dovecot, imap_user)) == (5, 5, 5)


def test_rescan_runs_as_an_ordinary_xtuple_user(
    dovecot: DovecotServer, imap_user: ImapAccount, xtuple_dsn: str,
) -> None:
    # The rescan deletes the folder's location rows and writes the new folder state
    # (fs_mailboxid of migration 0009 included) with the rights xtrole has.
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(5, prefix="xr"))
    account = key(dovecot, imap_user)
    assert run_once(make_sync(xtuple_dsn, dovecot, imap_user)).imported == 5
    with psycopg.connect(xtuple_dsn, autocommit=True) as conn:
        # As if another folder of 50 messages had been synchronized under this name.
        conn.execute("UPDATE xtmail.folder_state SET fs_last_uid = 50")
        dovecot.append(imap_user.user, imap_user.password, "INBOX", make_message())
        result = run_once(make_sync(xtuple_dsn, dovecot, imap_user))
        assert result.error is None
        (inbox,) = result.folders
        assert (inbox.imported, inbox.already_present, inbox.rescanned) == (1, 5, True)
        assert stored_locations(conn, account, "INBOX") == folder_messages(
            dovecot, imap_user, "INBOX")
        row = conn.execute("SELECT fs_last_uid, fs_mailboxid FROM xtmail.folder_state"
                           ).fetchone()
        assert row == (6, None)  # Dovecot 2.3 offers no MAILBOXID


class SilentIdle:
    """Leaves out what the server says about new mail while the client IDLEs: a server whose
    IDLE only polls (Cyrus without idled) says nothing for a minute or more."""

    def __init__(self) -> None:
        self.idling = False
        self.dropped = 0

    def __call__(self, data: bytes) -> bytes:
        kept = []
        for line in data.split(b"\r\n"):
            if line.startswith(b"+ idling"):
                self.idling = True
            elif self.idling and re.match(rb"\* \d+ (EXISTS|RECENT)", line):
                self.dropped += 1
                continue
            elif self.idling and line.split(b" ")[1:2] == [b"OK"] and b"IDLE" in line.upper():
                self.idling = False
            kept.append(line)
        return b"\r\n".join(kept)


@pytest.mark.parametrize("check_every", [1.0, 600.0], ids=["checked", "pushed-only"])
def test_a_server_whose_idle_says_nothing_is_checked_now_and_then(
    plain_dovecot: DovecotServer, db_dsn: str, conn: psycopg.Connection, check_every: float,
) -> None:
    server = plain_dovecot
    user = f"silent{int(check_every)}"
    server.add_user(user, "secret")
    silent = SilentIdle()
    with TcpProxy(server.host, server.imap_port, downstream=silent) as proxy:
        stop = threading.Event()
        sync = make_sync(db_dsn, server, ImapAccount(user, "secret"), stop=stop,
                         poll_interval=600.0,
                         account_changes={"host": proxy.host, "port": proxy.port,
                                          "security": Security.NONE, "ca_file": ""})
        sync.idle_check_every = check_every
        thread = watch_in_thread(sync, stop)
        try:
            server.wait_for_idle(user)
            server.append(user, "secret", "INBOX", make_message(subject="unannounced"))
            if check_every < 600:
                # Seen by the next examination, within about a second, not ten minutes.
                wait_until(lambda: eml_count(conn) == 1, 15, "new mail never seen")
                assert silent.dropped >= 1
            else:
                # The same server without the checks: IDLE alone never tells.
                time.sleep(4.0)
                assert eml_count(conn) == 0 and silent.dropped >= 1
        finally:
            stop_watch(sync, stop, thread)
