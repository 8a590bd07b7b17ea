"""SyncService on a qasync loop, against real Dovecot and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import keyring
import keyring.backend
import keyring.backends.fail
import psycopg
import pytest
import qasync
from PyQt6.QtCore import QTimer

from tests.helpers.dovecot import DovecotServer, ImapAccount, iter_generated_messages
from tests.helpers.mail import make_message
from xtmail.sync.imap.account import Backoff
from xtmail.sync.imap.credentials import Credential, KeyringCredentials, StaticCredentials
from xtmail.sync.imap.service import SWITCH_INTERVAL, SyncService, parse_pool
from xtmail.sync.imap.settings import (
    AccountSettings,
    AuthMethod,
    EmailSettings,
    MailAccount,
    SyncSettings,
)

T = TypeVar("T")


@contextmanager
def installed_keyring(backend: keyring.backend.KeyringBackend) -> Iterator[None]:
    previous = keyring.get_keyring()
    keyring.set_keyring(backend)
    try:
        yield
    finally:
        keyring.set_keyring(previous)


class Signals:
    """Records every signal of a service (bound methods: no lambdas holding references)."""

    def __init__(self, service: SyncService) -> None:
        self.progress: list[tuple[str, str, int, int]] = []
        self.statuses: list[str] = []
        self.errors: list[tuple[str, str]] = []
        self.imported: dict[int, list[tuple[str, int]]] = {}
        self.finished: list[tuple[str, int]] = []
        self.running: list[bool] = []
        service.progressChanged.connect(self.on_progress)
        service.statusChanged.connect(self.statuses.append)
        service.errorOccurred.connect(self.on_error)
        service.messagesImported.connect(self.imported.update)
        service.syncFinished.connect(self.on_finished)
        service.runningChanged.connect(self.running.append)

    def on_progress(self, account: str, folder: str, done: int, total: int) -> None:
        self.progress.append((account, folder, done, total))

    def on_error(self, kind: str, message: str) -> None:
        self.errors.append((kind, message))

    def on_finished(self, account: str, imported: int) -> None:
        self.finished.append((account, imported))


async def until(check: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def run(loop: qasync.QEventLoop, coro: Awaitable[T]) -> T:
    return loop.run_until_complete(coro)  # type: ignore[no-any-return]


def make_service(
    server: DovecotServer, account: ImapAccount, dsn: str, *, password: str | None = None,
    parse_executor: Executor | None = None, separate_process: bool = False,
    restart_delay: float = 0.2, **settings: Any,
) -> SyncService:
    account_settings = AccountSettings(
        host=server.host, user=account.user, port=server.imaps_port,
        ca_file=str(server.ca_file), timeout=10.0,
    )
    return SyncService(
        SyncSettings(account=account_settings, **settings),
        StaticCredentials(Credential(AuthMethod.PASSWORD, password or account.password)),
        dsn,
        backoff=Backoff(initial=0.05, cap=0.5),
        parse_executor=parse_executor,
        separate_process=separate_process,
        parse_workers=1,
        restart_delay=restart_delay,
    )


def eml_count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM xtbatch.eml").fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("separate_process", [False, True], ids=["threads", "process"])
def test_service_syncs_watches_and_applies_folder_changes(
    qloop: qasync.QEventLoop, dovecot: DovecotServer, imap_user: ImapAccount,
    db_dsn: str, conn: psycopg.Connection, separate_process: bool,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(60, prefix="svc"))
    dovecot.seed_maildir(imap_user.user, "Clients", iter_generated_messages(5, prefix="cl"))
    threads_before = set(threading.enumerate())
    # Parsing in a spawned, niced process, as a host application sets it up.
    pool = parse_pool(1)
    service = make_service(dovecot, imap_user, db_dsn, batch_size=20, poll_interval=60.0,
                           parse_executor=pool, separate_process=separate_process)
    assert service.runsInProcesses() == separate_process
    signals = Signals(service)
    gaps: list[float] = []
    ticks = [time.monotonic()]

    def tick() -> None:
        now = time.monotonic()
        gaps.append(now - ticks[0])
        ticks[0] = now

    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(tick)

    async def scenario() -> None:
        timer.start()
        service.start()
        assert service.isRunning()
        await until(lambda: bool(signals.finished))
        assert signals.finished[0] == (f"{imap_user.user}@{dovecot.host}", 60), signals.errors
        assert len(signals.imported) == 60
        assert signals.progress[-1][1:] == ("INBOX", 60, 60)
        assert service.lastFinished() is not None
        # While IDLE waits, new mail arrives and is announced.
        await asyncio.to_thread(dovecot.wait_for_idle, imap_user.user)
        await asyncio.to_thread(dovecot.append, imap_user.user, imap_user.password, "INBOX",
                                make_message(subject="while running"))
        await until(lambda: len(signals.imported) == 61, within=10)
        # A folder added while running is synchronized without a restart. Changed once the
        # service waits again: a wake during a pass is lost (see
        # test_a_folder_added_during_a_pass_is_synchronized_next).
        await asyncio.to_thread(dovecot.wait_for_idle, imap_user.user)
        service.setFolders(["INBOX", "Clients"])
        await until(lambda: len(signals.imported) == 66, within=10)
        assert any(p[1] == "Clients" for p in signals.progress)
        # startNow() while running ends the wait: another pass.
        await asyncio.to_thread(dovecot.wait_for_idle, imap_user.user)
        passes = len(signals.finished)
        service.startNow()
        await until(lambda: len(signals.finished) > passes, within=10)
        timer.stop()
        await service.aclose()

    try:
        run(qloop, scenario())
    finally:
        pool.shutdown()
    assert not service.isRunning()
    assert signals.running == [True, False]
    assert signals.errors == []
    assert "Stopped" in signals.statuses
    assert eml_count(conn) == 66
    # Our worker threads are gone (qasync's own executor threads show up as dummies).
    assert not [t for t in threading.enumerate() if t not in threads_before and t.is_alive()
                and not isinstance(t, threading._DummyThread)]
    # The GUI thread was never blocked for long while the sync ran in its worker thread.
    assert max(gaps) < 0.5, max(gaps)


class GatedExecutor(Executor):
    """Parses in the calling (sync) thread, but only while ``gate`` is open: closing it
    holds the next pass in the middle, at its first parse."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.held = threading.Event()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        if not self.gate.is_set():
            self.held.set()
            assert self.gate.wait(30), "the test never opened the gate"
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, as executors do
            future.set_exception(exc)
        return future


def test_a_folder_added_during_a_pass_is_synchronized_next(
    qloop: qasync.QEventLoop, dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(3, prefix="in"))
    dovecot.seed_maildir(imap_user.user, "Clients", iter_generated_messages(5, prefix="cl"))
    executor = GatedExecutor()
    service = make_service(dovecot, imap_user, db_dsn, poll_interval=60.0,
                           parse_executor=executor)
    signals = Signals(service)

    async def scenario() -> None:
        service.start()
        try:
            await until(lambda: bool(signals.finished))
            await asyncio.to_thread(dovecot.wait_for_idle, imap_user.user)
            # New mail ends the IDLE; the pass it starts is held at its parse.
            executor.gate.clear()
            await asyncio.to_thread(dovecot.append, imap_user.user, imap_user.password,
                                    "INBOX", make_message(subject="during the pass"))
            await until(executor.held.is_set, within=10)
            service.setFolders(["INBOX", "Clients"])
            executor.gate.set()
            await until(lambda: len(signals.imported) == 9, within=5)
        finally:
            executor.gate.set()
            await service.aclose()

    run(qloop, scenario())
    assert signals.errors == []


@pytest.mark.parametrize("separate_process", [False, True], ids=["threads", "process"])
def test_authentication_failure_is_reported_and_stops(
    qloop: qasync.QEventLoop, dovecot: DovecotServer, imap_user: ImapAccount,
    db_dsn: str, separate_process: bool,
) -> None:
    service = make_service(dovecot, imap_user, db_dsn, password="wrong",
                           separate_process=separate_process)
    signals = Signals(service)

    async def scenario() -> None:
        service.start()
        await until(lambda: not service.isRunning())
        await service.aclose()

    run(qloop, scenario())
    assert [kind for kind, _ in signals.errors] == ["authentication"]
    assert "refused the login" in signals.errors[0][1]
    assert service.lastError() == signals.errors[0][1]
    assert signals.running == [True, False]


def test_invalid_settings_do_not_start(
    qloop: qasync.QEventLoop, db_dsn: str,
) -> None:
    service = SyncService(SyncSettings(), StaticCredentials(Credential(AuthMethod.PASSWORD, "x")),
                          db_dsn)
    signals = Signals(service)

    async def scenario() -> None:
        service.start()
        await service.aclose()

    run(qloop, scenario())
    assert not service.isRunning()
    assert signals.errors and signals.errors[0][0] == "config"
    assert "host name" in signals.errors[0][1]


class PriorityProbe:
    """A connect_db for the service that notes, in the thread that connects (the sync
    thread and the writer threads it starts), that thread's CPU priority and the
    interpreter's switch interval at that moment."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.seen: list[tuple[str, int, float]] = []

    def __call__(self) -> psycopg.Connection:
        thread = threading.current_thread().name
        nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        self.seen.append((thread, nice, sys.getswitchinterval()))
        return psycopg.connect(self.dsn, autocommit=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="niceness per thread: Linux")
@pytest.mark.parametrize("niceness", [10, 0])
def test_sync_threads_give_way_to_the_gui_thread(
    qloop: qasync.QEventLoop, dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    niceness: int,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(30, prefix="nice"))
    probe = PriorityProbe(db_dsn)
    service = SyncService(
        SyncSettings(account=account_of(dovecot, imap_user), batch_size=10),
        StaticCredentials(Credential(AuthMethod.PASSWORD, imap_user.password)),
        probe, niceness=niceness,
    )
    signals = Signals(service)
    gui_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    interval = sys.getswitchinterval()

    async def scenario() -> None:
        service.start()
        await until(lambda: bool(signals.finished))
        await service.aclose()

    run(qloop, scenario())
    assert signals.errors == [] and signals.finished[0][1] == 30
    assert probe.seen, "the service never connected"
    # Every connection was opened from a sync thread or a writer thread it started, at the
    # lowered priority; the GUI thread's own priority is untouched.
    assert {nice for _, nice, _ in probe.seen} == {min(19, gui_nice + niceness)}, probe.seen
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == gui_nice
    # The lock changed hands every millisecond while the sync ran, and the interval the
    # process had came back after it.
    assert {switch for _, _, switch in probe.seen} == {min(interval, SWITCH_INTERVAL)}
    assert sys.getswitchinterval() == interval


def account_of(server: DovecotServer, account: ImapAccount, **changes: Any) -> AccountSettings:
    return AccountSettings(host=server.host, user=account.user, port=server.imaps_port,
                           ca_file=str(server.ca_file), timeout=10.0, **changes)


@pytest.mark.parametrize("separate_process", [False, True], ids=["threads", "process"])
def test_two_accounts_run_side_by_side_each_with_its_folders(
    qloop: qasync.QEventLoop, dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    conn: psycopg.Connection, separate_process: bool,
) -> None:
    other = ImapAccount(f"second-{imap_user.user}", "second-password")
    dovecot.add_user(other.user, other.password)
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(4, prefix="one"))
    dovecot.seed_maildir(other.user, "INBOX", iter_generated_messages(3, prefix="two-in"))
    dovecot.seed_maildir(other.user, "Clients", iter_generated_messages(2, prefix="two-cl"))
    email = EmailSettings(accounts=(
        MailAccount(account_of(dovecot, imap_user)),
        MailAccount(account_of(dovecot, other), folders=("Clients",)),
    ), options=SyncSettings(poll_interval=60.0))

    class PerAccount:
        def credential(self, account: AccountSettings) -> Credential:
            password = {imap_user.user: imap_user.password, other.user: other.password}
            return Credential(AuthMethod.PASSWORD, password[account.user])

    service = SyncService(email.enabled(), PerAccount(), db_dsn,
                          backoff=Backoff(initial=0.05, cap=0.5),
                          separate_process=separate_process, parse_workers=0)
    signals = Signals(service)

    async def scenario() -> None:
        service.start()
        assert sorted(service.runningAccounts()) == sorted(
            [f"{imap_user.user}@{dovecot.host}", f"{other.user}@{dovecot.host}"])
        await until(lambda: len(signals.finished) >= 2)
        # The second account's INBOX joins while running, for that account only.
        service.setFolders(["Clients", "INBOX"], account=f"{other.user}@{dovecot.host}")
        await until(lambda: len(signals.imported) == 9, within=10)
        await service.aclose()

    run(qloop, scenario())
    assert signals.errors == []
    assert dict(signals.finished[:2]) == {f"{imap_user.user}@{dovecot.host}": 4,
                                          f"{other.user}@{dovecot.host}": 2}
    assert signals.running == [True, False]
    assert any(s.startswith(f"{other.user}@{dovecot.host}: ") for s in signals.statuses)
    rows = conn.execute(
        "SELECT loc_account, count(*) FROM xtmail.location GROUP BY 1 ORDER BY 1").fetchall()
    assert sorted(rows) == sorted([(f"{imap_user.user}@{dovecot.host}", 4),
                                   (f"{other.user}@{dovecot.host}", 5)])


@pytest.mark.parametrize("separate_process", [False, True], ids=["threads", "process"])
def test_a_password_command_signs_in_and_a_failing_one_says_which(
    qloop: qasync.QEventLoop, dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    tmp_path: Path, conn: psycopg.Connection, separate_process: bool,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(3, prefix="cmd"))
    helper = tmp_path / "get-password"
    helper.write_text(f"#!/bin/sh\necho '{imap_user.password}'\n")
    helper.chmod(0o700)
    broken = tmp_path / "broken-helper"
    broken.write_text("#!/bin/sh\necho 'vault is sealed' >&2\nexit 3\n")
    broken.chmod(0o700)
    with installed_keyring(keyring.backends.fail.Keyring()):
        good = SyncService(
            SyncSettings(account=account_of(dovecot, imap_user, password_command=str(helper)),
                         poll_interval=60.0),
            KeyringCredentials(), db_dsn, backoff=Backoff(initial=0.05, cap=0.5),
            separate_process=separate_process, parse_workers=0)
        good_signals = Signals(good)
        bad = SyncService(
            SyncSettings(account=account_of(dovecot, imap_user, password_command=str(broken))),
            KeyringCredentials(), db_dsn, backoff=Backoff(initial=0.05, cap=0.5),
            separate_process=separate_process, parse_workers=0)
        bad_signals = Signals(bad)

        async def scenario() -> None:
            good.start()
            await until(lambda: bool(good_signals.finished))
            await good.aclose()
            bad.start()
            await until(lambda: not bad.isRunning())
            await bad.aclose()

        run(qloop, scenario())
    assert good_signals.errors == [] and good_signals.finished[0][1] == 3
    assert eml_count(conn) == 3
    (kind, message), = bad_signals.errors
    assert kind == "config"
    assert message.startswith(f"The password command `{broken}` failed (exit status 3): "
                              "vault is sealed.")


@pytest.mark.parametrize("separate_process", [False, True], ids=["threads", "process"])
def test_a_wrong_host_name_is_worded_for_people(
    qloop: qasync.QEventLoop, db_dsn: str, separate_process: bool,
) -> None:
    account = AccountSettings(host="imap.example.invalid", user="ann", timeout=5.0)
    service = SyncService(SyncSettings(account=account),
                          StaticCredentials(Credential(AuthMethod.PASSWORD, "pw")), db_dsn,
                          backoff=Backoff(initial=0.05, cap=0.2),
                          separate_process=separate_process, parse_workers=0)
    signals = Signals(service)

    async def scenario() -> None:
        service.start()
        await until(lambda: any("retrying" in s for s in signals.statuses) or bool(
            signals.errors), within=10)
        await service.aclose()

    run(qloop, scenario())
    # Whether the sync stops (a wrong setting) or retries (the name server may be away),
    # what the user reads names the cause in words.
    shown = [*signals.statuses, *(message for _, message in signals.errors)]
    assert any("no such host" in text for text in shown), shown
    assert not any("Errno" in text or ".." in text for text in shown), shown


def test_a_token_command_signs_in_with_xoauth2(
    qloop: qasync.QEventLoop, dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    tmp_path: Path, conn: psycopg.Connection,
) -> None:
    # An OAuth2 helper (oama, mutt_oauth2.py...) prints a fresh access token.
    token = "ya29." + imap_user.password
    dovecot.add_oauth_token(imap_user.user, token)
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(2, prefix="oa"))
    helper = tmp_path / "oauth2-helper"
    helper.write_text(f"#!/bin/sh\necho '{token}'\n")
    helper.chmod(0o700)
    account = account_of(dovecot, imap_user, auth=AuthMethod.XOAUTH2,
                         password_command=str(helper))
    with installed_keyring(keyring.backends.fail.Keyring()):
        service = SyncService(SyncSettings(account=account, poll_interval=60.0),
                              KeyringCredentials(), db_dsn,
                              backoff=Backoff(initial=0.05, cap=0.5))
        signals = Signals(service)

        async def scenario() -> None:
            service.start()
            await until(lambda: bool(signals.finished) or bool(signals.errors))
            await service.aclose()

        run(qloop, scenario())
    assert signals.errors == [] and signals.finished[0][1] == 2
    assert eml_count(conn) == 2


@pytest.mark.parametrize("separate_process", [False, True], ids=["threads", "process"])
def test_an_account_added_while_running_starts_and_a_removed_one_stops(
    qloop: qasync.QEventLoop, dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    separate_process: bool,
) -> None:
    other = ImapAccount(f"added-{imap_user.user}", "added-password")
    dovecot.add_user(other.user, other.password)
    dovecot.seed_maildir(other.user, "INBOX", iter_generated_messages(2, prefix="added"))
    first = SyncSettings(account=account_of(dovecot, imap_user), poll_interval=60.0)
    second = SyncSettings(account=account_of(dovecot, other), poll_interval=60.0)

    class PerAccount:
        def credential(self, account: AccountSettings) -> Credential:
            password = {imap_user.user: imap_user.password, other.user: other.password}
            return Credential(AuthMethod.PASSWORD, password[account.user])

    service = SyncService(first, PerAccount(), db_dsn, backoff=Backoff(initial=0.05, cap=0.5),
                          separate_process=separate_process, parse_workers=0)
    signals = Signals(service)

    async def scenario() -> None:
        service.start()
        await until(lambda: bool(signals.finished))
        service.setSettings([first, second])  # Save with a new account on the Email page
        await until(lambda: (second.account.key, 2) in signals.finished, within=10)
        assert sorted(service.runningAccounts()) == sorted(
            [first.account.key, second.account.key])
        service.setSettings([first])  # the account removed again
        await until(lambda: service.runningAccounts() == [first.account.key], within=10)
        assert service.isRunning()
        await service.aclose()

    run(qloop, scenario())
    assert signals.errors == []
    assert signals.running == [True, False]
