"""``xtmail sync`` as a process: killed at any instant it resumes, and its exit codes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.helpers.dovecot import DovecotServer, ImapAccount, iter_generated_messages
from tests.helpers.mail import make_message
from tests.helpers.qt import MemoryKeyring
from tests.helpers.xtuple import refuse_new_contacts
from xtmail.app import cli
from xtmail.sync.imap.account import try_lock_account

MESSAGES = 1500
RUNNER = "import sys; from xtmail.app.cli import main; sys.exit(main())"


def sync_args(server: DovecotServer, account: ImapAccount, dsn: str, *extra: str) -> list[str]:
    return [
        "sync", "--dsn", dsn, "--host", server.host, "--port", str(server.imaps_port),
        "--user", account.user, "--ca-file", str(server.ca_file), "--workers", "0",
        "--retry-initial", "0.05", "--retry-cap", "0.2", "--timeout", "5", *extra,
    ]


def start_cli(args: list[str], password: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "XTMAIL_TEST_PW": password}
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, *args, "--password-env", "XTMAIL_TEST_PW", "--quiet"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )


def stored(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM xtmail.location").fetchone()
    return int(row[0]) if row else 0


def assert_database_equals_mailbox(conn: psycopg.Connection, total: int) -> None:
    eml, locations, distinct_uids, distinct_hashes = conn.execute(
        """SELECT (SELECT count(*) FROM xtbatch.eml),
                  count(*), count(DISTINCT loc_uid),
                  (SELECT count(DISTINCT eml_hash) FROM xtbatch.eml)
             FROM xtmail.location"""
    ).fetchone() or (0, 0, 0, 0)
    assert (eml, locations, distinct_uids, distinct_hashes) == (total, total, total, total)
    state = conn.execute("SELECT fs_last_uid FROM xtmail.folder_state").fetchone()
    assert state == (total,)


def test_sigkill_at_several_moments_then_resume(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    conn: psycopg.Connection,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(MESSAGES, prefix="k"))
    # Three writers: batches commit out of order, so kills land between out-of-order commits.
    args = sync_args(dovecot, imap_user, db_dsn, "--batch-size", "100", "--writers", "3")

    def logged_in(before: int) -> bool:
        return dovecot.sessions(imap_user.user) > 0

    def first_batch(before: int) -> bool:
        return stored(conn) > before

    def some_batches(before: int) -> bool:
        return stored(conn) >= before + 300

    # Each kill waits for a moment it sees: the server has the login (connecting or on the
    # first batch), this run committed its first batch, or several.
    moments = [logged_in, first_batch, some_batches, first_batch, some_batches]
    seen_counts = []
    for reached in moments:
        before = stored(conn)
        proc = start_cli(args, imap_user.password)
        deadline = time.monotonic() + 60
        while not reached(before) and proc.poll() is None:
            assert time.monotonic() < deadline, f"{reached.__name__} not reached"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        seen_counts.append((before, stored(conn)))
    proc = start_cli(args, imap_user.password)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert b"imported:" in out
    assert_database_equals_mailbox(conn, MESSAGES)
    # The kills happened part-way: each run resumed where the previous one stopped.
    assert any(0 < after < MESSAGES for _, after in seen_counts), seen_counts
    assert all(b <= a for b, a in seen_counts)


def test_sigterm_stops_cleanly_with_exit_130(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    conn: psycopg.Connection,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(50))
    proc = start_cli(sync_args(dovecot, imap_user, db_dsn, "--watch", "--poll-interval", "5"),
                     imap_user.password)
    deadline = time.monotonic() + 30
    while stored(conn) < 50:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == cli.EXIT_INTERRUPTED, err.decode()
    assert_database_equals_mailbox(conn, 50)


def test_cli_with_keyring_password_and_summary(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    memory_keyring: MemoryKeyring, capsys: pytest.CaptureFixture[str],
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(7))
    memory_keyring.set_password("xtmail", f"{imap_user.user}@{dovecot.host}",
                                imap_user.password)
    # One parsing process (the default pool, started with forkserver).
    args = sync_args(dovecot, imap_user, db_dsn)
    args[args.index("--workers") + 1] = "1"
    assert cli.main([*args, "--quiet", "--batch-size", "3"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "INBOX: 7 new, 0 already stored" in out
    assert "imported: 7" in out
    assert cli.main([*sync_args(dovecot, imap_user, db_dsn), "--quiet"]) == cli.EXIT_OK
    assert "INBOX: 0 new, 0 already stored (unchanged)" in capsys.readouterr().out


def test_cli_prints_a_store_warning_once(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str, conn: psycopg.Connection,
    memory_keyring: MemoryKeyring, capsys: pytest.CaptureFixture[str],
) -> None:
    refuse_new_contacts(conn)
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(9))
    memory_keyring.set_password("xtmail", f"{imap_user.user}@{dovecot.host}",
                                imap_user.password)
    args = sync_args(dovecot, imap_user, db_dsn, "--quiet", "--batch-size", "3")
    assert cli.main(args) == cli.EXIT_OK
    captured = capsys.readouterr()
    assert "imported: 9" in captured.out
    assert captured.err.count("xtmail: warning: New contacts were not created") == 1


def test_cli_exit_codes(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    memory_keyring: MemoryKeyring, capsys: pytest.CaptureFixture[str],
) -> None:
    base = sync_args(dovecot, imap_user, db_dsn)
    # No password anywhere: a setting to fix.
    assert cli.main([*base, "--quiet"]) == cli.EXIT_CONFIG
    assert "No password is stored" in capsys.readouterr().err
    memory_keyring.set_password("xtmail", f"{imap_user.user}@{dovecot.host}", "wrong")
    assert cli.main([*base, "--quiet"]) == cli.EXIT_AUTH
    assert "refused the login" in capsys.readouterr().err
    memory_keyring.set_password("xtmail", f"{imap_user.user}@{dovecot.host}",
                                imap_user.password)
    no_ca = [a for a in base if a not in {"--ca-file", str(dovecot.ca_file)}]
    assert cli.main([*no_ca, "--quiet"]) == cli.EXIT_CERTIFICATE
    assert "pin its SHA-256 fingerprint" in capsys.readouterr().err
    closed = [*base[: base.index("--port") + 1], "1", *base[base.index("--port") + 2 :]]
    assert cli.main([*closed, "--quiet", "--retries", "1"]) == cli.EXIT_NETWORK
    bad_db = [*base[:2], db_dsn + " port=1", *base[3:]]
    assert cli.main([*bad_db, "--quiet", "--retries", "1"]) == cli.EXIT_DATABASE
    assert cli.main([*base, "--quiet", "--since", "yesterday"]) == cli.EXIT_CONFIG


def test_cli_signs_in_with_a_password_command_and_applies_the_contact_policy(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str, conn: psycopg.Connection,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """No keyring and no environment variable: the password comes from a command, as with
    isync's PassCmd; --new-contacts-from senders creates contacts from From only."""
    secret = tmp_path / "secret"
    secret.write_text(imap_user.password + "\nsecond line ignored\n")
    dovecot.seed_maildir(imap_user.user, "INBOX", [
        make_message(sender=f"Sender {i} <sender{i}@customer.example>",
                     to=f"Recipient {i} <recipient{i}@customer.example>")
        for i in range(3)])
    args = [*sync_args(dovecot, imap_user, db_dsn), "--quiet",
            "--password-command", f"cat {secret}", "--new-contacts-from", "senders"]
    assert cli.main(args) == cli.EXIT_OK, capsys.readouterr().err
    assert "imported: 3" in capsys.readouterr().out
    emails = {r[0] for r in conn.execute("SELECT cntct_email FROM cntct")}
    assert emails == {f"sender{i}@customer.example" for i in range(3)}
    # A command that fails names itself and what it said; nothing is retried.
    failing = [*sync_args(dovecot, imap_user, db_dsn), "--quiet",
               "--password-command", "echo vault is sealed >&2; exit 3"]
    assert cli.main(failing) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "vault is sealed" in err and "Traceback" not in err


def test_cli_leaves_an_account_another_xtmail_synchronizes(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str, conn: psycopg.Connection,
    memory_keyring: MemoryKeyring, capsys: pytest.CaptureFixture[str],
) -> None:
    """The company's mail server (another session holding the account's lock) has the
    account: `xtmail sync` says who, imports nothing, and is not an error."""
    memory_keyring.set_password("xtmail", f"{imap_user.user}@{dovecot.host}",
                                imap_user.password)
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(2))
    key = f"{imap_user.user}@{dovecot.host}"
    with psycopg.connect(db_dsn, autocommit=True, application_name="xtmail serve on hq") as held:
        assert try_lock_account(held, key)
        assert cli.main([*sync_args(dovecot, imap_user, db_dsn), "--quiet"]) == cli.EXIT_OK
    captured = capsys.readouterr()
    assert "synchronized by the mail server on host hq" in captured.err
    assert "left the account to it" in captured.err
    assert "imported: 0" in captured.out
    assert stored(conn) == 0
