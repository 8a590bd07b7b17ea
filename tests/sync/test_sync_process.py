"""SyncService with each account in a child process (what MailHost runs), against real
Dovecot and PostgreSQL: a stop keeps what was committed and loses nothing, a killed child is
reported in words and started again after a pause, and the child never holds the credential
longer than the parent gives it. The thread-mode behaviours shared with it are parametrised
in test_service.py."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import psycopg
import qasync

from tests.helpers.dovecot import DovecotServer, ImapAccount, iter_generated_messages
from tests.sync.test_service import Signals, eml_count, make_service, run, until
from xtmail.sync.imap.credentials import Credential
from xtmail.sync.imap.process import SyncProcess
from xtmail.sync.imap.service import SYNC_NICENESS
from xtmail.sync.imap.settings import AccountSettings, AuthMethod


class CountingCredentials:
    """The parent's credential provider, counting the child's questions."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.asked: list[str] = []

    def credential(self, account: AccountSettings) -> Credential:
        self.asked.append(account.key)
        return Credential(AuthMethod.PASSWORD, self.password)


def placement(pid: int) -> tuple[int, int, int | None]:
    """A process's session, niceness, and its scheduling group's niceness (autogroup)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    group = Path(f"/proc/{pid}/autogroup")
    group_nice = int(group.read_text().split()[-1]) if group.exists() else None
    return int(fields[3]), int(fields[16]), group_nice


def child_of(service: object) -> SyncProcess:
    runner, = service._runners.values()  # type: ignore[attr-defined]
    assert isinstance(runner.sync, SyncProcess)
    return runner.sync


def kill_child(service: object) -> int:
    """SIGKILL the account's sync process; its pid."""
    pid = child_of(service).pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    return pid


def pauses(statuses: list[str]) -> list[str]:
    """The statuses announcing a restart ("... Starting it again in N s.")."""
    return [s for s in statuses if "Starting it again in" in s]


def pause_seconds(statuses: list[str], nth: int) -> int:
    """The pause announced in the ``nth`` restart status (from 1)."""
    return int(pauses(statuses)[nth - 1].rsplit(" in ", 1)[1].split()[0])


def test_a_stop_mid_pass_keeps_the_committed_batches_and_the_next_start_finishes(
    qloop: qasync.QEventLoop, dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    conn: psycopg.Connection,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(600, prefix="sp"))
    service = make_service(dovecot, imap_user, db_dsn, batch_size=25, poll_interval=60.0,
                           separate_process=True)
    credentials = CountingCredentials(imap_user.password)
    service._credentials = credentials  # the parent's provider, asked by the child
    signals = Signals(service)

    async def scenario() -> int:
        service.start()
        await until(lambda: eml_count(conn) >= 50, within=30)
        child = child_of(service)
        assert child.pid is not None and child.pid != os.getpid()
        # Lower than the application, in a session (and scheduling group) of its own.
        session, niceness, group = placement(child.pid)
        assert session == child.pid != os.getsid(0)
        assert niceness == os.getpriority(os.PRIO_PROCESS, 0) + SYNC_NICENESS
        assert group in (None, SYNC_NICENESS)  # None: a kernel without autogroup
        await service.aclose()
        stopped_at = eml_count(conn)
        passes = len(signals.finished)  # the stopped pass reports what it committed
        service.start()
        await until(lambda: len(signals.finished) > passes, within=60)
        await service.aclose()
        return stopped_at

    stopped_at = run(qloop, scenario())
    assert 50 <= stopped_at < 600, "the stop came after the whole folder"
    # Nothing lost, nothing twice: the second run stored exactly the rest.
    assert eml_count(conn) == 600
    assert sum(n for _, n in signals.finished) == 600
    assert signals.errors == []
    # Each run's child asked the parent for the password when it connected.
    assert credentials.asked == [f"{imap_user.user}@{dovecot.host}"] * 2
    assert signals.running == [True, False, True, False]


def test_a_killed_sync_process_is_reported_and_a_new_one_goes_on_after_a_pause(
    qloop: qasync.QEventLoop, dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    conn: psycopg.Connection,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(5, prefix="kill"))
    service = make_service(dovecot, imap_user, db_dsn, poll_interval=60.0,
                           separate_process=True, restart_delay=0.5)
    signals = Signals(service)

    async def scenario() -> tuple[int, int]:
        service.start()
        await until(lambda: bool(signals.finished))  # the pass ended: it waits for mail
        await asyncio.to_thread(dovecot.wait_for_idle, imap_user.user)
        killed = kill_child(service)
        await until(lambda: bool(pauses(signals.statuses)), within=20)
        # Mail that arrives while no child runs is the new child's first pass.
        dovecot.seed_maildir(imap_user.user, "INBOX",
                             iter_generated_messages(3, prefix="after"))
        await until(lambda: eml_count(conn) == 8, within=30)
        restarted = child_of(service).pid
        assert service.isRunning()
        await service.aclose()
        return killed, restarted or 0

    killed, restarted = run(qloop, scenario())
    assert restarted not in (0, killed)
    (kind, message), = signals.errors
    assert kind == "internal"
    assert "ended unexpectedly (signal 9)" in message
    assert "What it committed is kept" in message
    pause, = pauses(signals.statuses)
    assert "ended unexpectedly (signal 9)" in pause
    assert pause.endswith(("again in 0 s.", "again in 1 s.")), pause
    assert signals.running == [True, False]
    assert sum(n for _, n in signals.finished) == 8


def test_sync_now_ends_the_pause_before_a_restart_and_a_stop_ends_the_next(
    qloop: qasync.QEventLoop, dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    conn: psycopg.Connection,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(2, prefix="pause"))
    service = make_service(dovecot, imap_user, db_dsn, poll_interval=60.0,
                           separate_process=True, restart_delay=120.0)
    signals = Signals(service)

    async def scenario() -> float:
        service.start()
        await until(lambda: bool(signals.finished))
        kill_child(service)
        await until(lambda: len(pauses(signals.statuses)) == 1, within=20)
        # Start Now (the Preferences' button) does not wait out the 120 s.
        dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(1, prefix="now"))
        service.startNow()
        await until(lambda: eml_count(conn) == 3, within=30)
        await until(lambda: len(signals.finished) == 3)  # the new child's pass ended
        kill_child(service)
        await until(lambda: len(pauses(signals.statuses)) == 2, within=20)
        started = asyncio.get_running_loop().time()
        await service.aclose()
        return asyncio.get_running_loop().time() - started

    took = run(qloop, scenario())
    assert took < 30, "aclose waited for the pause"
    # A completed pass brought the pause back to the first one (120 s, +-25 %), not 240.
    assert 90 <= pause_seconds(signals.statuses, 1) <= 150
    assert 90 <= pause_seconds(signals.statuses, 2) <= 150
    assert signals.statuses[-1] == "Stopped"
    assert signals.running == [True, False]
    assert len(signals.errors) == 2
