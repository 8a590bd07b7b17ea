"""Every failure a user can cause on the command line is a message with what to do and an
exit code from --help, never a traceback: a malformed connection string, a database that does
not exist or was never initialised, a refused password, a role without rights, a server that
never answers, missing paths, Ctrl+C in the middle of an import."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.helpers.dovecot import DovecotServer, ImapAccount, iter_generated_messages
from tests.helpers.mail import make_message
from tests.helpers.postgres import TestDatabases
from tests.helpers.xtuple import create_connect_tables, create_user
from tests.sync.test_orphans import descendants, still_running, write_maildir
from xtmail.app import cli
from xtmail.app.localpg import LocalPostgres

RUNNER = "import sys; from xtmail.app.cli import main; sys.exit(main())"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def an_eml(folder: Path, name: str = "a.eml", subject: str = "hello") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(make_message(subject=subject, message_id=f"<{name}@x>"))
    return path


def count(dsn: str, query: str = "SELECT count(*) FROM xtbatch.eml") -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def with_dbname(dsn: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname)


# -- the connection string ----------------------------------------------------------------------

MALFORMED = ["host=127.0.0.1 port=5432 dbname", "host=127.0.0.1 port=abc dbname=x",
             "postgresql://u@127.0.0.1/x?nosuchoption=1"]


@pytest.mark.parametrize("dsn", MALFORMED)
@pytest.mark.parametrize("command", ["init-db", "import", "demo"])
def test_a_malformed_connection_string_is_a_setting_to_fix(
    command: str, dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    args = [command, "--dsn", dsn]
    if command == "import":
        args += ["--quiet", str(an_eml(tmp_path))]
    if command == "demo":
        args += ["--folder", str(tmp_path)]
    code, _out, err = run(capsys, *args)
    assert code == cli.EXIT_CONFIG
    assert err.startswith("xtmail: The connection string is not valid: ")
    assert "host=HOST port=PORT dbname=DATABASE user=USER" in err


@pytest.mark.parametrize("command", ["init-db", "import"])
def test_a_database_that_does_not_exist_is_a_setting_not_an_outage(
    command: str, db_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    args = [command, "--dsn", with_dbname(db_dsn, "no_such_database")]
    if command == "import":
        args += ["--quiet", str(an_eml(tmp_path))]
    code, _out, err = run(capsys, *args)
    assert code == cli.EXIT_CONFIG
    assert 'database "no_such_database" does not exist' in err
    assert "Check the host, database name (dbname) and user" in err
    assert "Cannot reach" not in err and "try again" not in err


def test_sync_stops_at_once_on_a_database_that_does_not_exist(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(3))
    monkeypatch.setenv("XTMAIL_TEST_PW", imap_user.password)
    started = time.monotonic()
    # Retried as an outage, eight retries would wait for minutes.
    code, _out, err = run(capsys, *sync_args(dovecot, imap_user,
                                             with_dbname(db_dsn, "no_such_database")))
    assert time.monotonic() - started < 30
    assert code == cli.EXIT_CONFIG
    assert 'database "no_such_database" does not exist' in err
    assert "resumes" not in err and "retrying" not in err


def sync_args(server: DovecotServer, account: ImapAccount, dsn: str) -> list[str]:
    return ["sync", "--dsn", dsn, "--host", server.host, "--port", str(server.imaps_port),
            "--user", account.user, "--ca-file", str(server.ca_file), "--workers", "0",
            "--password-env", "XTMAIL_TEST_PW", "--quiet", "--timeout", "5"]


# -- a database without init-db -----------------------------------------------------------------


@pytest.fixture(params=["empty", "connect_tables_only", "no_xtmail_schema"])
def uninitialised_dsn(
    request: pytest.FixtureRequest, empty_db_dsn: str, db_dsn: str,
) -> str:
    """A database init-db never ran on: empty; with xTuple Connect's mail tables only; with
    the ERP's and Connect's tables but not xtmail's schema."""
    if request.param == "no_xtmail_schema":
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute("DROP SCHEMA xtmail CASCADE")
        return db_dsn
    if request.param == "connect_tables_only":
        with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
            create_connect_tables(conn)
    return empty_db_dsn


def test_import_into_a_database_without_init_db_says_to_run_it(
    uninitialised_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code, _out, err = run(capsys, "import", "--dsn", uninitialised_dsn, "--quiet",
                          str(an_eml(tmp_path)))
    assert code == cli.EXIT_DATABASE
    assert err.startswith("xtmail: The database is not set up for xtmail")
    assert "does not exist" in err
    assert "Run 'xtmail init-db --dsn ...'" in err


def test_sync_into_a_database_without_init_db_says_to_run_it(
    dovecot: DovecotServer, imap_user: ImapAccount, empty_db_dsn: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(3))
    monkeypatch.setenv("XTMAIL_TEST_PW", imap_user.password)
    code, _out, err = run(capsys, *sync_args(dovecot, imap_user, empty_db_dsn))
    assert code == cli.EXIT_DATABASE
    assert "The database is not set up for xtmail" in err
    assert "Run 'xtmail init-db --dsn ...'" in err
    assert "retrying" not in err


# -- roles: a refused password, no rights ---------------------------------------------------------


@pytest.fixture
def password_role(pg_server: LocalPostgres, databases: TestDatabases) -> Iterator[str]:
    """A login role the server checks a password for (the test server trusts the others)."""
    role = f"xt_pw_{secrets.token_hex(4)}"
    hba = pg_server.datadir / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n{original}")
    with databases.admin() as admin:
        create_user(admin, role)
        admin.execute(sql.SQL("ALTER ROLE {} PASSWORD 'right-password'").format(
            sql.Identifier(role)))
        admin.execute("SELECT pg_reload_conf()")
    try:
        yield role
    finally:
        hba.write_text(original)
        with databases.admin() as admin:
            admin.execute("SELECT pg_reload_conf()")
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.mark.parametrize("command", ["init-db", "import"])
def test_a_refused_password_is_a_setting_not_an_outage(
    command: str, password_role: str, db_dsn: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dsn = psycopg.conninfo.make_conninfo(db_dsn, user=password_role, password="wrong")
    args = [command, "--dsn", dsn]
    if command == "import":
        args += ["--quiet", str(an_eml(tmp_path))]
    code, _out, err = run(capsys, *args)
    assert code == cli.EXIT_CONFIG
    assert err.startswith("xtmail: The database refused the login: ")
    assert f'password authentication failed for user "{password_role}"' in err
    assert "Check the user and password" in err
    # The right password works: the failure was the password, not the role.
    right = psycopg.conninfo.make_conninfo(db_dsn, user=password_role, password="right-password")
    assert run(capsys, "init-db", "--dsn", right)[0] == cli.EXIT_OK


def test_import_as_a_role_without_rights_names_the_missing_grant(
    db_dsn: str, tmp_path: Path, databases: TestDatabases, capsys: pytest.CaptureFixture[str],
) -> None:
    role = f"xt_norights_{secrets.token_hex(4)}"
    with databases.admin() as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        dsn = psycopg.conninfo.make_conninfo(db_dsn, user=role)
        code, _out, err = run(capsys, "import", "--dsn", dsn, "--quiet", str(an_eml(tmp_path)))
    finally:
        with databases.admin() as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    assert code == cli.EXIT_DATABASE
    assert err.startswith("xtmail: Not allowed")
    assert "Your database role lacks USAGE on schema" in err
    assert "xtrole" in err
    assert count(db_dsn) == 0


def test_init_db_as_an_ordinary_xtuple_user_says_who_may_run_it(
    empty_db_dsn: str, databases: TestDatabases, capsys: pytest.CaptureFixture[str],
) -> None:
    clerk = "xt_clerk_cli_faults"
    with databases.admin() as admin:
        create_user(admin, clerk)
    code, _out, err = run(capsys, "init-db", "--dsn",
                          psycopg.conninfo.make_conninfo(empty_db_dsn, user=clerk))
    assert code == cli.EXIT_DATABASE
    assert err.startswith("xtmail: Not allowed to change the database schema: permission denied")
    assert "Run 'xtmail init-db' as the database owner" in err


# -- a server that never answers -----------------------------------------------------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        held: list[socket.socket] = []
        stop = threading.Event()

        def accept() -> None:
            listener.settimeout(0.2)
            while not stop.is_set():
                try:
                    held.append(listener.accept()[0])
                except TimeoutError:
                    continue

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            yield int(listener.getsockname()[1])
        finally:
            stop.set()
            thread.join()
            for sock in held:
                sock.close()


def test_init_db_on_a_server_that_never_answers_gives_up_and_says_so(
    silent_port: int, capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    code, _out, err = run(capsys, "init-db", "--dsn",
                          f"host=127.0.0.1 port={silent_port} dbname=erp user=admin")
    waited = time.monotonic() - started
    assert cli.CONNECT_TIMEOUT - 1 <= waited < cli.CONNECT_TIMEOUT + 10
    assert code == cli.EXIT_DATABASE
    assert err.startswith("xtmail: The database did not answer in time: ")
    assert "connection timeout expired" in err
    assert "another program may be listening there" in err


def test_a_timeout_in_the_connection_string_is_kept(
    silent_port: int, capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    code, _out, err = run(capsys, "init-db", "--dsn",
                          f"host=127.0.0.1 port={silent_port} dbname=erp connect_timeout=2")
    assert time.monotonic() - started < cli.CONNECT_TIMEOUT - 2
    assert code == cli.EXIT_DATABASE
    assert "timeout expired" in err


def test_init_db_waiting_for_a_lock_gives_up_and_says_so(
    empty_db_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from xtmail.sync.db import schema

    monkeypatch.setattr(cli, "LOCK_TIMEOUT", "1s")
    # Another init-db holds the migration lock and does not let go.
    with psycopg.connect(empty_db_dsn) as other:
        other.execute("SELECT pg_advisory_xact_lock(%s)", (schema._LOCK_KEY,))
        code, _out, err = run(capsys, "init-db", "--dsn", empty_db_dsn)
    assert code == cli.EXIT_DATABASE
    assert "did not answer in time to change the database schema" in err
    assert "lock timeout" in err
    assert "another session holds a lock" in err
    assert run(capsys, "init-db", "--dsn", empty_db_dsn)[0] == cli.EXIT_OK


# -- paths -----------------------------------------------------------------------------------------


def test_import_reports_each_missing_path_and_imports_the_others(
    db_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    first = an_eml(tmp_path / "one", "first.eml", "first")
    second = an_eml(tmp_path / "two", "second.eml", "second")
    missing = [tmp_path / "missing-a", tmp_path / "missing-b.mbox"]
    unreadable = tmp_path / ("x" * 300)  # a name the system refuses to look up
    code, out, err = run(capsys, "import", "--dsn", db_dsn, "--quiet", str(missing[0]),
                         str(first), str(unreadable), str(missing[1]), str(tmp_path / "two"))
    assert code == cli.EXIT_SOME_FAILED == 1
    assert "imported: 2" in out
    assert "failed: 3" in out
    for path in missing:
        assert f"  {path}: no such file or folder" in out
    assert f"  {unreadable}: File name too long" in out
    assert "3 messages or files could not be imported" in err
    assert count(db_dsn) == 2
    assert second.exists()


def test_import_of_nothing_but_missing_paths_is_a_wrong_argument(
    db_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code, _out, err = run(capsys, "import", "--dsn", db_dsn, str(tmp_path / "a"),
                          str(tmp_path / "b"))
    assert code == cli.EXIT_CONFIG
    assert f"{tmp_path / 'a'}, {tmp_path / 'b'}: no such file or folder" in err


# -- interrupting an import ------------------------------------------------------------------------

MESSAGES = 6000


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_import_says_what_it_saved_and_resumes(
    signum: int, db_dsn: str, tmp_path: Path,
) -> None:
    maildir = write_maildir(tmp_path / "Maildir", MESSAGES, "c")
    args = [sys.executable, "-c", RUNNER, "import", "--dsn", db_dsn, "--workers", "2",
            "--quiet", str(maildir)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while count(db_dsn) < 400:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        family = descendants(proc.pid)
        assert len(family) >= 2  # the parse workers
        # As a terminal does with Ctrl+C: the signal goes to the whole process group.
        os.killpg(proc.pid, signum)
        out, err = (b.decode() for b in proc.communicate(timeout=60))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == cli.EXIT_INTERRUPTED, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    saved = count(db_dsn)
    assert 0 < saved < MESSAGES
    assert f"xtmail: interrupted: {saved} messages saved." in err
    assert f"imported: {saved}\n" in out
    assert not still_running(family)
    # Nothing was lost or doubled: a second run imports exactly the rest.
    again = subprocess.run([*args], capture_output=True, check=False, timeout=300)
    assert again.returncode == cli.EXIT_OK, again.stderr.decode()
    assert f"imported: {MESSAGES - saved}\nalready present: {saved}\n" in again.stdout.decode()
    assert count(db_dsn) == MESSAGES


# -- --help ----------------------------------------------------------------------------------------


def test_every_command_lists_its_exit_codes_in_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(commands) >= {"init-db", "import", "demo", "local-db", "sync"}
    for name in [None, *commands]:
        with pytest.raises(SystemExit) as done:
            cli.main(["--help"] if name is None else [name, "--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert "exit codes" in text.lower(), name
        for code in (cli.EXIT_OK, cli.EXIT_CONFIG, cli.EXIT_DATABASE, cli.EXIT_INTERRUPTED):
            assert str(code) in text, (name, code)
    with pytest.raises(SystemExit):
        cli.main(["import", "--help"])
    text = capsys.readouterr().out
    assert "  1    done, but some messages or files could not be imported" in text
