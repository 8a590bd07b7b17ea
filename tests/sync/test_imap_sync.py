"""IMAP sync against a real Dovecot and a real PostgreSQL (xtmail.sync.imap.connection, .engine)."""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import date, datetime, timedelta

import psycopg
import pytest
from imap_tools.utils import encode_folder

from tests.helpers.dovecot import DovecotServer, ImapAccount, iter_generated_messages
from tests.helpers.mail import make_message
from tests.helpers.xtuple import refuse_new_contacts
from xtmail.sync.db.folder_state import FolderState
from xtmail.sync.errors import (
    AuthenticationFailed,
    CertificateError,
    TransientImapError,
    XtmailError,
)
from xtmail.sync.imap.account import AccountResult, AccountSync, Backoff
from xtmail.sync.imap.connection import (
    _INTERNALDATE,
    FolderStatus,
    ImapConnection,
    _internal_date,
    uid_set,
)
from xtmail.sync.imap.credentials import Credential, StaticCredentials
from xtmail.sync.imap.folder_sync import SyncListener, _chunks, _Watermark
from xtmail.sync.imap.settings import AccountSettings, AuthMethod, Security, SyncSettings


class Recorder(SyncListener):
    def __init__(self) -> None:
        self.progress_calls: list[tuple[str, int, int]] = []
        self.statuses: list[str] = []
        self.errors: list[tuple[str, XtmailError]] = []
        self.ties: dict[int, list[tuple[str, int]]] = {}
        self.warnings: list[str] = []

    def progress(self, account: str, folder: str, done: int, total: int) -> None:
        self.progress_calls.append((folder, done, total))

    def status(self, text: str) -> None:
        self.statuses.append(text)

    def imported(self, ties: dict[int, list[tuple[str, int]]]) -> None:
        self.ties.update(ties)

    def error(self, kind: str, error: XtmailError) -> None:
        self.errors.append((kind, error))

    def warning(self, text: str) -> None:
        self.warnings.append(text)


def account_for(server: DovecotServer, user: str, **changes: object) -> AccountSettings:
    base: dict[str, object] = {
        "host": server.host, "user": user, "port": server.imaps_port,
        "ca_file": str(server.ca_file), "timeout": 10.0,
    }
    base.update(changes)
    return AccountSettings(**base)  # type: ignore[arg-type]


def make_sync(
    dsn: str,
    server: DovecotServer,
    account: ImapAccount,
    *,
    listener: SyncListener | None = None,
    credential: Credential | None = None,
    stop: threading.Event | None = None,
    executor: Executor | None = None,
    **settings: object,
) -> AccountSync:
    changes = settings.pop("account_changes", {})
    assert isinstance(changes, dict)
    sync_settings = SyncSettings(account=account_for(server, account.user, **changes),
                                 **settings)  # type: ignore[arg-type]
    cred = credential or Credential(AuthMethod.PASSWORD, account.password)
    return AccountSync(
        sync_settings, StaticCredentials(cred),
        lambda: psycopg.connect(dsn, autocommit=True),
        listener=listener, stop=stop, backoff=Backoff(initial=0.05, cap=0.5), retry_limit=20,
        executor=executor,
    )


def run_once(sync: AccountSync) -> AccountResult:
    try:
        return sync.run_once()
    finally:
        sync.close()


def counts(conn: psycopg.Connection, account: str) -> tuple[int, int, int]:
    """(eml rows, location rows of the account, distinct (mailbox, uid) of the account)."""
    eml = conn.execute("SELECT count(*) FROM xtbatch.eml").fetchone()
    loc = conn.execute(
        "SELECT count(*), count(DISTINCT (loc_mailbox, loc_uid)) FROM xtmail.location "
        "WHERE loc_account = %s", (account,)
    ).fetchone()
    assert eml is not None and loc is not None
    return int(eml[0]), int(loc[0]), int(loc[1])


@pytest.fixture
def seeded(dovecot: DovecotServer, imap_user: ImapAccount) -> ImapAccount:
    dovecot.seed_maildir(imap_user.user, "INBOX",
                         iter_generated_messages(40, prefix=imap_user.user))
    return imap_user


def key(server: DovecotServer, account: ImapAccount) -> str:
    return f"{account.user}@{server.host}"


def assert_finished_state(conn: psycopg.Connection, account: str, last_uid: int) -> None:
    """The folder state of a pass that got through: its last UID and HIGHESTMODSEQ."""
    state = conn.execute(
        "SELECT fs_last_uid, fs_highestmodseq FROM xtmail.folder_state WHERE fs_account = %s",
        (account,),
    ).fetchone()
    assert state is not None and state[0] == last_uid and state[1] is not None


def test_batches_commit_without_waiting_for_the_disk_flush(
    dovecot: DovecotServer, seeded: ImapAccount, db_dsn: str, conn: psycopg.Connection
) -> None:
    """The sync's writer sessions, every one of them, commit asynchronously (a lost commit
    loses its folder state with it); no other session changes."""
    # (The test server commits asynchronously throughout; what matters is who set it.)
    setting = "SELECT setting, source FROM pg_settings WHERE name = 'synchronous_commit'"
    opened: list[psycopg.Connection] = []
    relaxed: list[str] = []

    def connect() -> psycopg.Connection:
        new = psycopg.connect(db_dsn, autocommit=True)
        opened.append(new)
        return new

    class Watching(SyncListener):
        def progress(self, account: str, folder: str, done: int, total: int) -> None:
            if done:  # a batch has committed: every writer session is set up by now
                relaxed[:] = [str(c.execute(setting).fetchone()) for c in opened if not c.closed]

    settings = SyncSettings(account=account_for(dovecot, seeded.user), batch_size=10)
    sync = AccountSync(settings, StaticCredentials(Credential(AuthMethod.PASSWORD,
                                                              seeded.password)),
                       connect, listener=Watching(), writers=2)
    assert run_once(sync).imported == 40
    assert relaxed == ["('off', 'session')", "('off', 'session')"]
    other = conn.execute(setting).fetchone()
    assert other is not None and other[1] != "session"


def test_uid_set_compresses_ranges() -> None:
    assert uid_set([1, 2, 3, 7, 9, 10]) == "1:3,7,9:10"
    assert uid_set([5]) == "5"


@pytest.mark.parametrize("text", [
    b"17-Jul-1996 02:44:25 -0700", b" 5-Jan-2024 10:00:00 +0100", b"05-jan-2024 23:59:59 +0530",
    b"29-Feb-2024 00:00:00 +0000", b"31-Feb-2024 10:00:00 +0000", b"1-Foo-2024 10:00:00 +0000",
    b"17-Jul-1996 02:44:25", b"garbage",
])
def test_internal_date_reads_like_strptime(text: bytes) -> None:
    match = _INTERNALDATE.search(b'* 1 FETCH (UID 4 INTERNALDATE "' + text + b'" BODY[] {0}')
    try:
        expected = datetime.strptime(text.decode(), "%d-%b-%Y %H:%M:%S %z")
    except ValueError:
        expected = None
    got = _internal_date(match)
    assert got == expected
    assert got is None or got.utcoffset() == expected.utcoffset()  # type: ignore[union-attr]


def test_initial_then_incremental_then_unchanged(
    dovecot: DovecotServer, seeded: ImapAccount, db_dsn: str, conn: psycopg.Connection
) -> None:
    recorder = Recorder()
    result = run_once(make_sync(db_dsn, dovecot, seeded, listener=recorder, batch_size=15))
    assert result.error is None
    assert result.imported == 40
    assert counts(conn, key(dovecot, seeded)) == (40, 40, 40)
    assert recorder.progress_calls[-1] == ("INBOX", 40, 40)
    assert len(recorder.ties) == 40

    for i in range(3):
        dovecot.append(seeded.user, seeded.password, "INBOX",
                       make_message(subject=f"later {i}", sender=f"new{i}@example.org"))
    result = run_once(make_sync(db_dsn, dovecot, seeded))
    assert result.imported == 3
    assert counts(conn, key(dovecot, seeded)) == (43, 43, 43)

    result = run_once(make_sync(db_dsn, dovecot, seeded))
    assert [f.skipped for f in result.folders] == ["unchanged"]
    assert_finished_state(conn, key(dovecot, seeded), 43)


def test_pipelined_parsing_in_an_executor(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    conn: psycopg.Connection,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(330, prefix="pp"))
    recorder = Recorder()
    with ThreadPoolExecutor(2) as pool:
        result = run_once(make_sync(db_dsn, dovecot, imap_user, listener=recorder,
                                    executor=pool, batch_size=40))
    assert result.error is None and result.imported == 330
    # Two writers: batches may finish out of order, so the last (short) one may come early.
    done = [d for _, d, _ in recorder.progress_calls]
    assert done[0] == 0 and done[-1] == 330 and len(done) == 10
    assert sorted(b - a for a, b in itertools.pairwise(done)) == [10] + [40] * 8
    assert counts(conn, key(dovecot, imap_user)) == (330, 330, 330)
    row = conn.execute("SELECT fs_last_uid FROM xtmail.folder_state").fetchone()
    assert row == (330,)


def test_resume_skips_uids_stored_above_the_last_uid(
    dovecot: DovecotServer, seeded: ImapAccount, db_dsn: str, conn: psycopg.Connection
) -> None:
    """Two writers commit batches out of order; a process killed between two commits leaves
    messages stored above fs_last_uid. The next pass must neither fetch nor double them."""
    assert run_once(make_sync(db_dsn, dovecot, seeded, batch_size=15)).imported == 40
    # As if batch 1..5 and 16..30 had not committed, but 31..40 had.
    conn.execute("DELETE FROM xtmail.location WHERE loc_uid BETWEEN 1 AND 5 "
                 "OR loc_uid BETWEEN 16 AND 30")
    # Connect's emladdr does not cascade: its rows go first.
    conn.execute("DELETE FROM xtbatch.emladdr WHERE emladdr_eml_id NOT IN "
                 "(SELECT loc_eml_id FROM xtmail.location)")
    conn.execute("DELETE FROM xtbatch.eml WHERE eml_id NOT IN "
                 "(SELECT loc_eml_id FROM xtmail.location)")
    conn.execute("UPDATE xtmail.folder_state SET fs_last_uid = 0, fs_highestmodseq = NULL")
    dovecot.append(seeded.user, seeded.password, "INBOX", make_message(subject="new one"))
    result = run_once(make_sync(db_dsn, dovecot, seeded, batch_size=4))
    assert result.error is None
    folder = result.folders[0]
    assert (folder.fetched, folder.imported, folder.already_present) == (21, 21, 0)
    assert counts(conn, key(dovecot, seeded)) == (41, 41, 41)
    assert_finished_state(conn, key(dovecot, seeded), 41)


def test_a_refused_second_writer_connection_leaves_one_writer(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    conn: psycopg.Connection,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(60, prefix="w"))
    opened: list[psycopg.Connection] = []

    def connect_once() -> psycopg.Connection:
        if opened:  # the server is at its connection limit for the second writer
            raise psycopg.OperationalError("sorry, too many clients already")
        opened.append(psycopg.connect(db_dsn, autocommit=True))
        return opened[0]

    settings = SyncSettings(account=account_for(dovecot, imap_user.user), batch_size=10)
    sync = AccountSync(settings, StaticCredentials(
        Credential(AuthMethod.PASSWORD, imap_user.password)), connect_once, retry_limit=0)
    result = run_once(sync)
    assert result.error is None and result.retries == 0
    assert result.imported == 60 and len(opened) == 1
    assert counts(conn, key(dovecot, imap_user)) == (60, 60, 60)


def test_store_warnings_reach_the_listener_once_per_folder(
    dovecot: DovecotServer, seeded: ImapAccount, db_dsn: str, conn: psycopg.Connection
) -> None:
    # xTuple's contact trigger refuses a user without the privilege: the mail still goes
    # in, and the user is told once, not once per batch.
    refuse_new_contacts(conn)
    recorder = Recorder()
    result = run_once(make_sync(db_dsn, dovecot, seeded, listener=recorder, batch_size=10))
    assert result.error is None and result.imported == 40
    assert len(recorder.warnings) == 1
    assert "privileges to maintain Contacts" in recorder.warnings[0]


def test_batches_are_bounded_by_bytes_too(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    conn: psycopg.Connection,
) -> None:
    big = ("0123456789" * 7 + "abcdef\r\n") * 4000  # about 312 KB
    dovecot.seed_maildir(imap_user.user, "INBOX",
                         [make_message(subject=f"big {i}", body=big) for i in range(7)])
    recorder = Recorder()
    sync = make_sync(db_dsn, dovecot, imap_user, listener=recorder)
    sync.batch_bytes = 700_000  # two of them, not three
    result = run_once(sync)
    assert result.error is None and result.imported == 7
    done = [d for _, d, _ in recorder.progress_calls]
    assert sorted(b - a for a, b in itertools.pairwise(done)) == [1, 2, 2, 2]
    assert counts(conn, key(dovecot, imap_user)) == (7, 7, 7)


def test_chunks_by_count_and_bytes() -> None:
    sizes = {1: 10, 2: 10, 3: 500, 4: 10, 5: 10, 6: 10, 7: 10}
    assert _chunks([1, 2, 3, 4, 5, 6, 7], 3, sizes, 100) == [[1, 2], [3], [4, 5, 6], [7]]
    # A UID without a size (expunged meanwhile) weighs nothing; no sizes: by count alone.
    assert _chunks([1, 2, 8], 5, sizes, 15) == [[1], [2, 8]]
    assert _chunks([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    # Messages not asked their size count as `unknown` (the small-message bound).
    assert _chunks([1, 2, 3, 4, 5], 9, {}, 25, unknown=10) == [[1, 2], [3, 4], [5]]


def test_watermark_vouches_only_for_committed_runs() -> None:
    selected = FolderStatus(uidvalidity=7, uidnext=12, highestmodseq=99, messages=9)
    marks = _Watermark([[1, 2, 3], [4, 5, 6], [8, 9, 10]], selected, last=0, final_last=11)
    # Batch 1 commits first: it cannot vouch for batch 0's UIDs.
    first = marks.state_with(1)
    assert (first.last_uid, first.highestmodseq) == (0, None)
    marks.commit(1, first)
    # Batch 0 then covers both; the folder is not complete until batch 2 commits.
    second = marks.state_with(0)
    assert (second.last_uid, second.highestmodseq) == (6, None)
    marks.commit(0, second)
    assert not marks.complete
    last = marks.state_with(2)
    assert (last.uidvalidity, last.last_uid, last.highestmodseq) == (7, 11, 99)
    marks.commit(2, last)
    assert marks.complete and marks.final_written


def test_side_by_side_last_commits_leave_the_final_state_to_the_pass() -> None:
    selected = FolderStatus(uidvalidity=7, uidnext=12, highestmodseq=99, messages=6)
    marks = _Watermark([[1, 2, 3], [4, 5, 6]], selected, last=0, final_last=11)
    # Both batches reach their state update before either has committed.
    first, second = marks.state_with(0), marks.state_with(1)
    assert (first.last_uid, first.highestmodseq) == (3, None)
    assert (second.last_uid, second.highestmodseq) == (0, None)
    marks.commit(1, second)
    marks.commit(0, first)
    # All stored, but no transaction vouched for the folder: FolderSync writes it after.
    assert marks.complete and not marks.final_written
    assert marks.final_state() == FolderState(7, 11, 99)


def test_uidvalidity_change_rescans_without_duplicates(
    dovecot: DovecotServer, seeded: ImapAccount, db_dsn: str, conn: psycopg.Connection
) -> None:
    assert run_once(make_sync(db_dsn, dovecot, seeded)).imported == 40
    before = conn.execute("SELECT fs_uidvalidity FROM xtmail.folder_state").fetchone()
    dovecot.set_uidvalidity_change(seeded.user, "INBOX")
    result = run_once(make_sync(db_dsn, dovecot, seeded))
    assert result.error is None
    assert result.folders[0].rescanned
    assert result.imported == 0 and result.already_present == 40
    after = conn.execute("SELECT fs_uidvalidity FROM xtmail.folder_state").fetchone()
    assert before != after
    assert counts(conn, key(dovecot, seeded)) == (40, 40, 40)
    olds = conn.execute(
        "SELECT count(*) FROM xtmail.location WHERE loc_uidvalidity <> %s", (after[0],)
    ).fetchone()
    assert olds == (0,)


def test_sync_never_marks_mail_seen(
    dovecot: DovecotServer, seeded: ImapAccount, db_dsn: str
) -> None:
    dovecot.append(seeded.user, seeded.password, "INBOX", make_message(subject="read me"),
                   flags=["\\Seen"])
    assert run_once(make_sync(db_dsn, dovecot, seeded)).imported == 41
    with dovecot.login(seeded.user, seeded.password) as imap:
        imap.select("INBOX", readonly=True)
        typ, data = imap.uid("SEARCH", "SEEN")
        assert typ == "OK"
        assert data[0].split() == [b"41"]
        typ, data = imap.uid("SEARCH", "UNSEEN")
        assert len(data[0].split()) == 40


def test_untrusted_certificate_is_refused_with_fingerprint_then_pinned(
    dovecot: DovecotServer, seeded: ImapAccount, db_dsn: str
) -> None:
    recorder = Recorder()
    result = run_once(make_sync(db_dsn, dovecot, seeded, listener=recorder,
                                account_changes={"ca_file": ""}))
    assert isinstance(result.error, CertificateError)
    text = result.error.user_text()
    assert f"The server's certificate for {dovecot.host} could not be verified" in text
    assert "pin its SHA-256 fingerprint" in text
    pin = result.error.fingerprint
    assert pin is not None and pin in text and len(pin) == 95
    assert [kind for kind, _ in recorder.errors] == ["certificate"]

    result = run_once(make_sync(db_dsn, dovecot, seeded,
                                account_changes={"ca_file": "", "pin_sha256": pin.lower()}))
    assert result.error is None and result.imported == 40

    wrong = "AA:" * 31 + "AA"
    result = run_once(make_sync(db_dsn, dovecot, seeded,
                                account_changes={"ca_file": "", "pin_sha256": wrong}))
    assert isinstance(result.error, CertificateError)
    assert "does not match the pinned fingerprint" in str(result.error)


def test_starttls_with_verification(
    dovecot: DovecotServer, seeded: ImapAccount, db_dsn: str
) -> None:
    result = run_once(make_sync(db_dsn, dovecot, seeded, account_changes={
        "security": Security.STARTTLS, "port": dovecot.imap_port}))
    assert result.error is None and result.imported == 40


def test_authentication_failure_stops_the_account(
    dovecot: DovecotServer, seeded: ImapAccount, db_dsn: str
) -> None:
    recorder = Recorder()
    result = run_once(make_sync(db_dsn, dovecot, seeded, listener=recorder,
                                credential=Credential(AuthMethod.PASSWORD, "wrong")))
    assert isinstance(result.error, AuthenticationFailed)
    assert "refused the login" in str(result.error)
    assert [kind for kind, _ in recorder.errors] == ["authentication"]
    assert result.retries == 0


def test_xoauth2_login(
    dovecot: DovecotServer, seeded: ImapAccount, db_dsn: str
) -> None:
    token = secrets.token_urlsafe(16)
    dovecot.add_oauth_token(seeded.user, token)
    result = run_once(make_sync(db_dsn, dovecot, seeded,
                                credential=Credential(AuthMethod.XOAUTH2, token),
                                account_changes={"auth": AuthMethod.XOAUTH2}))
    assert result.error is None and result.imported == 40
    with pytest.raises(AuthenticationFailed):
        ImapConnection(account_for(dovecot, seeded.user),
                       Credential(AuthMethod.XOAUTH2, "not-a-token"))


def test_folders_with_special_use_and_since(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    conn: psycopg.Connection,
) -> None:
    dovecot.seed_maildir(imap_user.user, "Projects/Acme", iter_generated_messages(5))
    with ImapConnection(account_for(dovecot, imap_user.user),
                        Credential(AuthMethod.PASSWORD, imap_user.password)) as imap:
        names = {f.name for f in imap.list_folders()}
    assert {"INBOX", "Projects/Acme"} <= names
    tomorrow = date.today() + timedelta(days=1)
    result = run_once(make_sync(db_dsn, dovecot, imap_user, folders=("Projects/Acme",),
                                since=tomorrow))
    assert result.imported == 0 and result.error is None
    # The first sync moved past the old mail: it is not picked up later either.
    dovecot.append(imap_user.user, imap_user.password, "Projects/Acme", make_message())
    result = run_once(make_sync(db_dsn, dovecot, imap_user, folders=("Projects/Acme",)))
    assert result.imported == 1


def test_folder_with_a_non_ascii_name(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    conn: psycopg.Connection,
) -> None:
    # "Aufträge" (orders) travels as modified UTF-7 (RFC 3501 5.1.3): "Auftr&AOQ-ge".
    name = "Aufträge/Müller & Söhne"
    with dovecot.login(imap_user.user, imap_user.password) as imap:
        encoded = encode_folder(name)
        assert imap.create(encoded)[0] == "OK"
        assert imap.append(encoded, "()", None, make_message(subject="PO 4711"))[0] == "OK"
    with ImapConnection(account_for(dovecot, imap_user.user),
                        Credential(AuthMethod.PASSWORD, imap_user.password)) as imap:
        assert name in {f.name for f in imap.list_folders()}
    result = run_once(make_sync(db_dsn, dovecot, imap_user, folders=(name,)))
    assert result.error is None and result.imported == 1
    row = conn.execute("SELECT loc_mailbox FROM xtmail.location").fetchone()
    assert row == (name,)
    # The next pass finds it unchanged (STATUS with the encoded name).
    again = run_once(make_sync(db_dsn, dovecot, imap_user, folders=(name,)))
    assert [f.skipped for f in again.folders] == ["unchanged"]


def test_missing_folder_is_a_config_error(
    dovecot: DovecotServer, seeded: ImapAccount, db_dsn: str
) -> None:
    recorder = Recorder()
    result = run_once(make_sync(db_dsn, dovecot, seeded, listener=recorder,
                                folders=("No/Such",)))
    assert result.error is not None
    assert recorder.errors[0][0] == "config"
    assert "No/Such" in str(result.error)


def test_two_syncs_at_once_double_nothing(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    conn: psycopg.Connection,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(600, prefix="two"))
    results: list[AccountResult] = []

    def worker() -> None:
        results.append(run_once(make_sync(db_dsn, dovecot, imap_user, batch_size=50)))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r.error is None for r in results)
    assert counts(conn, key(dovecot, imap_user)) == (600, 600, 600)
    # The lock: a folder held by someone else is skipped, and says so.
    with psycopg.connect(db_dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, hashtext(%s))",
                       (0x78746D6C, f"{key(dovecot, imap_user)}\x1fINBOX"))
        dovecot.append(imap_user.user, imap_user.password, "INBOX", make_message())
        result = run_once(make_sync(db_dsn, dovecot, imap_user))
        assert result.folders[0].skipped == "another process is synchronizing this folder"
    assert run_once(make_sync(db_dsn, dovecot, imap_user)).imported == 1


def test_server_restart_mid_sync_reconnects_and_finishes(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    conn: psycopg.Connection,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(1000, prefix="rs"))

    class Restarter(Recorder):
        restarted = False

        def progress(self, account: str, folder: str, done: int, total: int) -> None:
            super().progress(account, folder, done, total)
            if done >= 300 and not self.restarted:
                self.restarted = True
                dovecot.restart()

    recorder = Restarter()
    result = run_once(make_sync(db_dsn, dovecot, imap_user, listener=recorder, batch_size=100))
    assert recorder.restarted
    assert result.error is None
    assert result.retries >= 1
    assert any("retrying in" in s for s in recorder.statuses)
    assert counts(conn, key(dovecot, imap_user)) == (1000, 1000, 1000)


def test_database_outage_pauses_and_resumes(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str,
    conn: psycopg.Connection,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(500, prefix="db"))

    class Cutter(Recorder):
        cut = False

        def progress(self, account: str, folder: str, done: int, total: int) -> None:
            super().progress(account, folder, done, total)
            if done >= 100 and not self.cut:
                self.cut = True
                # Every other session of this database is cut off, as in a server restart.
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )

    recorder = Cutter()
    result = run_once(make_sync(db_dsn, dovecot, imap_user, listener=recorder, batch_size=50))
    assert recorder.cut and result.error is None
    assert any("database is unreachable" in s for s in recorder.statuses)
    assert counts(conn, key(dovecot, imap_user)) == (500, 500, 500)


def watch_then_append(
    sync: AccountSync, stop: threading.Event, conn: psycopg.Connection, account: str,
    stored: int, append: Callable[[], object], dovecot: DovecotServer, user: str,
) -> float:
    """Run ``sync.watch`` in a thread until ``stored`` messages are in and the server sees
    its IDLE, call ``append`` and return the seconds until one more message is stored."""
    thread = threading.Thread(target=sync.watch)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while counts(conn, account)[0] < stored:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        dovecot.wait_for_idle(user)
        started = time.monotonic()
        append()
        while counts(conn, account)[0] < stored + 1:
            assert time.monotonic() - started < 5, "new mail not stored within 5 s"
            time.sleep(0.02)
        return time.monotonic() - started
    finally:
        stop.set()
        thread.join(10)
        sync.close()
        assert not thread.is_alive()


def test_idle_delivers_new_mail_within_seconds(
    dovecot: DovecotServer, seeded: ImapAccount, db_dsn: str,
    conn: psycopg.Connection,
) -> None:
    stop = threading.Event()
    sync = make_sync(db_dsn, dovecot, seeded, stop=stop, poll_interval=60.0)
    watch_then_append(sync, stop, conn, key(dovecot, seeded), 40, lambda: dovecot.append(
        seeded.user, seeded.password, "INBOX", make_message(subject="idle")),
        dovecot, seeded.user)


def test_idle_on_inbox_still_sees_other_folders_soon(
    dovecot: DovecotServer, seeded: ImapAccount, db_dsn: str,
    conn: psycopg.Connection,
) -> None:
    dovecot.seed_maildir(seeded.user, "Projects", iter_generated_messages(3, prefix="pr"))
    stop = threading.Event()
    sync = make_sync(db_dsn, dovecot, seeded, stop=stop, poll_interval=60.0,
                     folders=("INBOX", "Projects"))
    sync.other_folders_every = 1.0
    # Stored within 5 s, not after the 60 s poll interval: IDLE on INBOX ends after 1 s.
    watch_then_append(sync, stop, conn, key(dovecot, seeded), 43, lambda: dovecot.append(
        seeded.user, seeded.password, "Projects", make_message(subject="later")),
        dovecot, seeded.user)


def test_bare_imap4rev1_server_is_polled(
    dovecot: DovecotServer, db_dsn: str, conn: psycopg.Connection,
) -> None:
    # A server announcing only IMAP4rev1: no IDLE, no CONDSTORE, no SPECIAL-USE. The sync
    # must work with the base protocol: UIDNEXT to skip an unchanged folder, and polling.
    account = ImapAccount(f"bare-{secrets.token_hex(4)}", secrets.token_urlsafe(10))
    dovecot.add_user(account.user, account.password, capability="IMAP4rev1")
    dovecot.seed_maildir(account.user, "INBOX",
                         iter_generated_messages(12, prefix=account.user))
    stop = threading.Event()
    passes: list[AccountResult] = []
    sync = make_sync(db_dsn, dovecot, account, stop=stop, poll_interval=0.5)
    imap = sync._imap_connection()
    assert not imap.supports_idle
    assert "CONDSTORE" not in imap.capabilities
    thread = threading.Thread(target=sync.watch, args=(passes.append,))
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while counts(conn, key(dovecot, account))[0] < 12:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        dovecot.append(account.user, account.password, "INBOX", make_message(subject="polled"))
        started = time.monotonic()
        while counts(conn, key(dovecot, account))[0] < 13:
            assert time.monotonic() - started < 5, f"new mail not polled: {passes[-3:]}"
            time.sleep(0.05)
        seen = len(passes)
        while len(passes) < seen + 2:
            assert time.monotonic() - started < 10
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
        sync.close()
    assert not thread.is_alive()
    assert all(p.error is None for p in passes)
    assert [f.skipped for f in passes[-1].folders] == ["unchanged"]
    state = conn.execute(
        "SELECT fs_last_uid, fs_highestmodseq FROM xtmail.folder_state WHERE fs_account = %s",
        (key(dovecot, account),),
    ).fetchone()
    assert state == (13, None)


def test_transient_error_on_unreachable_server(
    imap_user: ImapAccount,
) -> None:
    with pytest.raises(TransientImapError):
        ImapConnection(AccountSettings(host="127.0.0.1", user="x", port=1, timeout=2),
                       Credential(AuthMethod.PASSWORD, "x"))


@pytest.fixture
def _no_stray_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    assert not [t for t in threading.enumerate() if t not in before and t.is_alive()]
