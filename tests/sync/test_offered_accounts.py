"""Users offer their own accounts to the company's mail server (migration 0015): each user sees
and withdraws only their own offers and never reads the table; ``xtmail serve`` synchronizes
the offered accounts with a credential the administrator gave it (an IMAP master user on a
real Dovecot, or a secret file per account), under the same account key and lock as the
user's desktop, which then leaves the account to the server."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.helpers.dovecot import DovecotServer, ImapAccount, iter_generated_messages
from tests.helpers.postgres import TestDatabases
from tests.helpers.xtuple import create_user
from xtmail.sync.db.offered import my_offered_accounts, offer_account, withdraw_account
from xtmail.sync.errors import ConfigError, PermissionDenied
from xtmail.sync.imap.account import AccountSync, Backoff
from xtmail.sync.imap.credentials import Credential, StaticCredentials
from xtmail.sync.imap.settings import AccountSettings, AuthMethod, SyncSettings
from xtmail.sync.serve import OfferedLogin, ServeOptions, Server

MASTER = ("xtmailsrv", secrets.token_urlsafe(12))
ALICE, BOB, SERVICE = "offer_alice", "offer_bob", "offer_service"


@pytest.fixture(scope="module")
def master_dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    """A Dovecot whose master user logs in as any user (``user*xtmailsrv``)."""
    server = DovecotServer(tmp_path_factory.mktemp("masterdovecot"), master_user=MASTER)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def roles(db_dsn: str, databases: TestDatabases) -> dict[str, str]:
    """DSNs of two ordinary users and of the service's role (granted what docs/serve.md
    says), all in xtrole."""
    with databases.admin() as admin:
        for name in (ALICE, BOB, SERVICE):
            create_user(admin, name)
    with psycopg.connect(db_dsn, autocommit=True) as owner:
        owner.execute(f"GRANT SELECT ON xtmail.server_account, xtmail.offered_account "
                      f"TO {SERVICE}")
    return {name: psycopg.conninfo.make_conninfo(db_dsn, user=name)
            for name in (ALICE, BOB, SERVICE)}


def mailbox(dovecot: DovecotServer, messages: int) -> ImapAccount:
    account = ImapAccount(f"offer-{secrets.token_hex(4)}", secrets.token_urlsafe(12))
    dovecot.add_user(account.user, account.password)
    dovecot.seed_maildir(account.user, "INBOX",
                         iter_generated_messages(messages, prefix=account.user))
    return account


def offer(dsn: str, dovecot: DovecotServer, user: str) -> int:
    """What the preferences page's checkbox does: the account's settings, no secret."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return offer_account(conn, host=dovecot.host, port=dovecot.imaps_port, user=user,
                             folders=["INBOX"])


def connector(dsn: str) -> Callable[[str], psycopg.Connection]:
    def connect(application: str) -> psycopg.Connection:
        return psycopg.connect(dsn, autocommit=True, application_name=application)
    return connect


def stored(conn: psycopg.Connection, key: str) -> tuple[int, int]:
    row = conn.execute("SELECT count(*), count(DISTINCT loc_uid) FROM xtmail.location "
                       "WHERE loc_account = %s", (key,)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


FAST = ServeOptions(max_active=2, writers=1, batch_size=10, timeout=10.0,
                    rebalance_every=0.5, poll_interval=600.0, retry_initial=0.05,
                    retry_cap=0.5, failed_initial=0.5, failed_cap=2.0)


def test_users_offer_list_and_withdraw_only_their_own_accounts(
    conn: psycopg.Connection, roles: dict[str, str]
) -> None:
    with psycopg.connect(roles[ALICE], autocommit=True) as alice, \
            psycopg.connect(roles[BOB], autocommit=True) as bob:
        offer_account(alice, host="imap.example.com", user="alice", folders=["INBOX", "Sent"])
        with pytest.raises(PermissionDenied) as taken:
            offer_account(bob, host="imap.example.com", user="alice")
        assert "already offered to the mail server by another user" in taken.value.user_text()
        offer_account(bob, host="imap.example.com", user="bob")
        assert [a.key for a in my_offered_accounts(alice)] == ["alice@imap.example.com"]
        assert my_offered_accounts(alice)[0].folders == ("INBOX", "Sent")
        assert [a.key for a in my_offered_accounts(bob)] == ["bob@imap.example.com"]
        # Nobody reads the table itself, nor anyone else's offers.
        for user in (alice, bob):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                user.execute("SELECT * FROM xtmail.offered_account")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                user.execute("SELECT * FROM xtmail.server_account")
        # Bob cannot withdraw Alice's offer; Alice can.
        assert not withdraw_account(bob, "imap.example.com", "alice")
        assert withdraw_account(alice, "imap.example.com", "alice")
        assert my_offered_accounts(alice) == []
    owners = conn.execute("SELECT oa_owner, oa_user FROM xtmail.offered_account").fetchall()
    assert owners == [(BOB, "bob")]
    columns = {r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'xtmail' AND table_name = 'offered_account'")}
    assert not any("secret" in c or "password" in c for c in columns)


def test_serve_syncs_an_offered_account_as_the_master_user_and_the_desktop_leaves_it(
    conn: psycopg.Connection, roles: dict[str, str], master_dovecot: DovecotServer
) -> None:
    imap = mailbox(master_dovecot, 15)
    key = f"{imap.user}@{master_dovecot.host}"
    offer(roles[ALICE], master_dovecot, imap.user)
    login = OfferedLogin("env", "MASTER_PW", master_user=MASTER[0],
                         ca_file=str(master_dovecot.ca_file))
    server = Server(connector(roles[SERVICE]), options=FAST, offered=login,
                    environ={"MASTER_PW": MASTER[1]}, instance="mail1 pid 9")
    summary = server.run_once()
    assert list(summary.synced) == [key] and not summary.failed, summary.failed
    assert summary.synced[key].imported == 15
    # The same account as the user's desktop: its key in the locations.
    assert stored(conn, key) == (15, 15)

    # While the service holds it, the user's desktop leaves it alone.
    running = threading.Thread(target=server.run, daemon=True)
    running.start()
    try:
        settings = SyncSettings(account=AccountSettings(
            host=master_dovecot.host, user=imap.user, port=master_dovecot.imaps_port,
            ca_file=str(master_dovecot.ca_file), timeout=10.0))
        deadline = time.monotonic() + 15
        while not server.lease.holds(key) and time.monotonic() < deadline:
            time.sleep(0.05)
        desktop = AccountSync(
            settings, StaticCredentials(Credential(AuthMethod.PASSWORD, imap.password)),
            lambda: psycopg.connect(roles[ALICE], autocommit=True,
                                    application_name="xtmail desktop"),
            backoff=Backoff(initial=0.05, cap=0.5), retry_limit=2)
        try:
            result = desktop.run_once()
        finally:
            desktop.close()
        assert result.held_by == "the mail server on host mail1 pid 9"
        # Alice withdraws: the service gives the account up at its next look.
        with psycopg.connect(roles[ALICE], autocommit=True) as alice:
            assert withdraw_account(alice, master_dovecot.host, imap.user)
        deadline = time.monotonic() + 15
        while server.lease.holds(key) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not server.lease.holds(key)
    finally:
        server.stop.set()
        running.join(30)
    assert stored(conn, key) == (15, 15)


def test_serve_syncs_offered_accounts_with_a_secret_file_per_account(
    conn: psycopg.Connection, roles: dict[str, str], dovecot: DovecotServer, tmp_path: Path
) -> None:
    first, second = mailbox(dovecot, 4), mailbox(dovecot, 6)
    offer(roles[ALICE], dovecot, first.user)
    offer(roles[BOB], dovecot, second.user)
    secrets_dir = tmp_path / "offered"
    secrets_dir.mkdir()
    (secrets_dir / f"{first.user}@{dovecot.host}").write_text(first.password + "\n")
    login = OfferedLogin("dir", str(secrets_dir), ca_file=str(dovecot.ca_file))
    summary = Server(connector(roles[SERVICE]), options=FAST, offered=login).run_once()
    assert summary.synced[f"{first.user}@{dovecot.host}"].imported == 4
    # No file for the second account: it is reported, not guessed.
    problem = summary.failed[f"{second.user}@{dovecot.host}"]
    assert "cannot be read" in problem
    assert stored(conn, f"{second.user}@{dovecot.host}") == (0, 0)


def test_without_the_grant_the_service_says_what_to_grant_and_syncs_the_rest(
    db_dsn: str, roles: dict[str, str], dovecot: DovecotServer, databases: TestDatabases
) -> None:
    with databases.admin() as admin:
        create_user(admin, "offer_bare")
    with psycopg.connect(db_dsn, autocommit=True) as owner:
        owner.execute("GRANT SELECT ON xtmail.server_account TO offer_bare")
    offer(roles[ALICE], dovecot, "someone")
    bare = psycopg.conninfo.make_conninfo(db_dsn, user="offer_bare")
    summary = Server(connector(bare), options=FAST,
                     offered=OfferedLogin("dir", "/nonexistent")).run_once()
    assert "GRANT SELECT ON xtmail.offered_account" in summary.failed["offered accounts"]


def test_offered_login_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="one password"):
        OfferedLogin("dir", "/x", master_user="m")
    with pytest.raises(ConfigError, match="a secret per offered account"):
        OfferedLogin("env", "PW")
    assert OfferedLogin("env", "PW", master_user="m").account("u", "h") == ("u*m", "env", "PW")
    assert OfferedLogin("dir", "/s").account("u", "h") == ("", "file", "/s/u@h")
