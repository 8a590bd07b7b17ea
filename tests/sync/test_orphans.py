"""No process of xtmail outlives it: SIGKILL a command or a pool's owner, and every process
it started (parse workers, the forkserver, the resource tracker) ends within seconds.

Descendants are read from /proc before the kill (the kernel's children lists), and each is
recognised afterwards by its pid and start time, so that a reused pid does not count. A zombie
counts as ended: it runs nothing, and the process that adopted it may never reap it.
"""

from __future__ import annotations

import multiprocessing.synchronize
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.helpers.dovecot import DovecotServer, ImapAccount, iter_generated_messages

RUNNER = "import sys; from xtmail.app.cli import main; sys.exit(main())"
#: How long the descendants of a killed process may take to end.
GRACE = 5.0

Process = tuple[int, str]  # pid and start time (field 22 of /proc/PID/stat)


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name, or None for no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2:].split()


def _started(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[19] if fields else None


def descendants(pid: int) -> set[Process]:
    """Every running process below ``pid``, with its start time."""
    found: set[Process] = set()
    todo = [pid]
    while todo:
        for children in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            try:
                pids = [int(p) for p in children.read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
            for child in pids:
                started = _started(child)
                if started is not None:
                    found.add((child, started))
                    todo.append(child)
    return found


def still_running(processes: set[Process]) -> set[Process]:
    """Those of ``processes`` that still run (the same pid and start time, not a zombie)."""
    running = set()
    for pid, started in processes:
        fields = _stat(pid)
        if fields is not None and fields[19] == started and fields[0] not in "ZX":
            running.add((pid, started))
    return running


def describe(processes: set[Process]) -> list[str]:
    lines = []
    for pid, _ in processes:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            cmdline = b"?"
        lines.append(f"{pid}: {cmdline.decode(errors='replace')[:200]}")
    return lines


def wait_for(what: str, condition: Callable[[], bool], proc: subprocess.Popen[bytes],
             timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            _out, err = proc.communicate()
            pytest.fail(f"{what}: the process ended first ({proc.returncode}): {err.decode()}")
        assert time.monotonic() < deadline, f"{what}: not reached in {timeout} s"
        time.sleep(0.02)


def kill_and_check(proc: subprocess.Popen[bytes], helpers: int) -> None:
    """SIGKILL ``proc`` alone (not its group) once it has ``helpers`` descendants; all of
    them end within GRACE seconds."""
    family = descendants(proc.pid)
    assert len(family) >= helpers, describe(family)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)  # not communicate(): an orphan would hold its pipes open
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    deadline = time.monotonic() + GRACE
    while (left := still_running(family)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, "outlived their parent:\n" + "\n".join(describe(left))


# -- the pools, for each start method ----------------------------------------------------------

POOL_OWNER = textwrap.dedent("""
    import sys, time
    from xtmail.sync.pipeline import parse_processes

    pool = parse_processes(2, start=sys.argv[1])
    # Busy workers: each holds a task when the owner is killed.
    jobs = [pool.submit(time.sleep, 600) for _ in range(4)]
    print("ready", flush=True)
    time.sleep(600)
""")


@pytest.mark.parametrize("start", ["fork", "forkserver", "spawn"])
def test_parse_workers_end_with_the_process_that_owns_the_pool(start: str) -> None:
    # "forkserver" as `xtmail sync`, "fork" as `xtmail import`, "spawn" as the GUI.
    proc = subprocess.Popen([sys.executable, "-c", POOL_OWNER, start],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        # Two workers, and the forkserver and the resource tracker where there are some.
        helpers = {"fork": 2, "forkserver": 4, "spawn": 3}[start]
        wait_for("the workers started", lambda: len(descendants(proc.pid)) >= helpers, proc)
        kill_and_check(proc, helpers)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


SHIELD_OWNER = textwrap.dedent("""
    import os, signal
    from pathlib import Path
    from xtmail.sync.pipeline import parse_processes

    def ignored(pid):
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        mask = int(next(line.split()[1] for line in status if line.startswith("SigIgn:")), 16)
        return [bool(mask & 1 << (sig - 1)) for sig in (signal.SIGINT, signal.SIGTERM)]

    def child_command(entry):  # (parent pid, command line) of a process, or None
        try:
            stat = (entry / "stat").read_text()
            return int(stat[stat.rindex(")") + 2:].split()[1]), (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            return None

    pool = parse_processes(1, start="forkserver")
    # Started by parse_processes itself, before any task, with both signals ignored.
    server, = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()
               and (found := child_command(entry)) and found[0] == os.getpid()
               and b"multiprocessing.forkserver" in found[1]]
    worker = pool.submit(os.getpid).result()
    print(signal.getsignal(signal.SIGINT) is signal.default_int_handler,
          signal.getsignal(signal.SIGTERM) is signal.SIG_DFL,
          ignored(server), ignored(worker), os.getpgid(worker) == worker, flush=True)
    pool.shutdown()
""")


def test_a_group_signal_cannot_reach_a_starting_forkserver_worker() -> None:
    # A worker forked from the fork server spends its start-up (imports) in the command's
    # process group; a Ctrl+C then killed it and broke the pool. Now the fork server starts
    # with SIGINT and SIGTERM ignored, so every worker starts with them ignored too; once
    # started, a worker has a group of its own and takes SIGTERM back (the pool ends broken
    # workers with it). The owner's own handlers are as they were.
    out = subprocess.run([sys.executable, "-c", SHIELD_OWNER], capture_output=True,
                         timeout=120, check=False, start_new_session=True)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.split(b"\n")[0] == b"True True [True, True] [True, False] True", out


# Where pidfd_open is missing (Linux before 5.3, macOS, Windows) the watch falls back on the
# parent's sentinel (spawn, forkserver) or on polling the parent pid (fork). The workers
# here are made by a thread that has ended, so no death signal is armed either.
FALLBACK_OWNER = textwrap.dedent("""
    import multiprocessing, os, sys, threading, time
    from tests.sync import test_orphans

    start = sys.argv[1]
    context = multiprocessing.get_context(start)
    ready = [context.Event() for _ in range(2)]

    def launch():
        for event in ready:
            context.Process(target=test_orphans.watching_without_pidfd, daemon=False,
                            args=(os.getpid(), threading.main_thread().ident, start, event),
                            ).start()

    thread = threading.Thread(target=launch)
    thread.start()
    thread.join()
    for event in ready:
        assert event.wait(60)
    print("ready", flush=True)
    time.sleep(600)
""")


def watching_without_pidfd(parent: int, parent_main: int, start: str,
                           ready: multiprocessing.synchronize.Event) -> None:
    """A parse worker's start, on a system without pidfd_open; then busy until killed."""
    from xtmail.sync import pipeline

    if hasattr(os, "pidfd_open"):
        del os.pidfd_open
    pipeline._worker_started(0, parent, parent_main, start)
    ready.set()
    time.sleep(600)


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_without_pidfd_the_workers_still_end_with_their_parent(start: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", FALLBACK_OWNER, start],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, cwd=Path(__file__).parents[2])
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == b"ready\n", proc.communicate()
        kill_and_check(proc, 2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


# -- the commands --------------------------------------------------------------------------------

MESSAGES = 6000


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", RUNNER, *args],
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def stored(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM xtbatch.eml").fetchone()
    return int(row[0]) if row else 0


def test_a_killed_sync_leaves_no_process_behind(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str, conn: psycopg.Connection,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(MESSAGES, prefix="o"))
    proc = start_cli(
        "sync", "--dsn", db_dsn, "--host", dovecot.host, "--port", str(dovecot.imaps_port),
        "--user", imap_user.user, "--ca-file", str(dovecot.ca_file), "--workers", "2",
        "--batch-size", "100", "--password-env", "XTMAIL_TEST_PW", "--quiet",
        env={"XTMAIL_TEST_PW": imap_user.password},
    )
    # Killed mid-work: the forkserver, the resource tracker and two busy workers.
    kill_mid_sync(proc, conn, 4)


def kill_mid_sync(proc: subprocess.Popen[bytes], conn: psycopg.Connection, helpers: int) -> None:
    """SIGKILL ``proc`` once it has stored its first batches, and check that its
    ``helpers`` descendants end too (:func:`kill_and_check`)."""
    try:
        wait_for("the first batches stored", lambda: stored(conn) >= 200, proc)
        kill_and_check(proc, helpers)
        assert stored(conn) < MESSAGES, "the sync ended before it was killed"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def write_maildir(folder: Path, count: int, prefix: str) -> Path:
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for n, raw in enumerate(iter_generated_messages(count, prefix=prefix)):
        (folder / "cur" / f"{n}.{prefix}:2,").write_bytes(raw)
    return folder


def test_a_killed_import_leaves_no_process_behind(
    tmp_path: Path, db_dsn: str, conn: psycopg.Connection,
) -> None:
    maildir = write_maildir(tmp_path / "Maildir", MESSAGES, "i")
    proc = start_cli("import", "--dsn", db_dsn, "--workers", "2", "--quiet", str(maildir))
    try:
        wait_for("the first batches stored", lambda: stored(conn) >= 400, proc)
        kill_and_check(proc, 2)
        assert stored(conn) < MESSAGES, "the import ended before it was killed"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def test_ctrl_c_during_a_sync_stops_it_without_a_worker_traceback(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str, conn: psycopg.Connection,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(MESSAGES, prefix="q"))
    proc = start_cli(
        "sync", "--dsn", db_dsn, "--host", dovecot.host, "--port", str(dovecot.imaps_port),
        "--user", imap_user.user, "--ca-file", str(dovecot.ca_file), "--workers", "2",
        "--batch-size", "100", "--password-env", "XTMAIL_TEST_PW", "--quiet",
        env={"XTMAIL_TEST_PW": imap_user.password},
    )
    try:
        wait_for("the first batches stored", lambda: stored(conn) >= 200, proc)
        family = descendants(proc.pid)
        assert len(family) >= 4, describe(family)
        # As a terminal does: Ctrl+C goes to the whole process group.
        os.killpg(proc.pid, signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err, err.decode()
    deadline = time.monotonic() + GRACE
    while (left := still_running(family)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, "outlived their parent:\n" + "\n".join(describe(left))


# -- the desktop's sync process (MailHost) ------------------------------------------------------

SYNC_PROCESS_OWNER = textwrap.dedent("""
    import sys, threading
    from xtmail.sync.imap.credentials import Credential, StaticCredentials
    from xtmail.sync.imap.folder_sync import SyncListener
    from xtmail.sync.imap.process import SyncProcess
    from xtmail.sync.imap.settings import AccountSettings, AuthMethod, SyncSettings

    host, port, user, password, ca_file, dsn = sys.argv[1:7]
    account = AccountSettings(host=host, port=int(port), user=user, ca_file=ca_file)
    sync = SyncProcess(SyncSettings(account=account, batch_size=100),
                       StaticCredentials(Credential(AuthMethod.PASSWORD, password)), dsn,
                       listener=SyncListener(), stop=threading.Event(), parse_workers=2)
    sync.run_once()
""")


def test_a_desktop_sync_process_ends_with_the_application_that_started_it(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str, conn: psycopg.Connection,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(MESSAGES, prefix="d"))
    proc = subprocess.Popen(
        [sys.executable, "-c", SYNC_PROCESS_OWNER, dovecot.host, str(dovecot.imaps_port),
         imap_user.user, imap_user.password, str(dovecot.ca_file), db_dsn],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    # The application killed mid-sync: its sync process (the pipe closes: it commits its
    # batch and exits), that one's forkserver and two busy parse workers.
    kill_mid_sync(proc, conn, 4)
