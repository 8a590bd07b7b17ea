"""Removed mail stays away through IMAP syncs (a real Dovecot), also when the folder is read
again from the start, and comes back after "allow again"."""

from __future__ import annotations

import psycopg

from tests.helpers.dovecot import DovecotServer, ImapAccount, iter_generated_messages
from tests.sync.test_imap_sync import key, make_sync, run_once
from xtmail.sync.db import privacy


def _stored(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM xtbatch.eml").fetchone()
    assert row is not None
    return int(row[0])


def test_a_removed_folder_stays_away_through_syncs_until_allowed_again(
    dovecot: DovecotServer, imap_user: ImapAccount, db_dsn: str, conn: psycopg.Connection,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX",
                         iter_generated_messages(6, prefix=imap_user.user))
    account = key(dovecot, imap_user)
    assert run_once(make_sync(db_dsn, dovecot, imap_user)).imported == 6
    assert privacy.remove_folder(conn, account, "INBOX", reason="personal") == (
        privacy.Removal(6, 0))
    assert _stored(conn) == 0

    assert run_once(make_sync(db_dsn, dovecot, imap_user)).imported == 0
    # Read again from the start (as after a UIDVALIDITY change): every message is skipped.
    conn.execute("DELETE FROM xtmail.folder_state WHERE fs_account = %s", (account,))
    result = run_once(make_sync(db_dsn, dovecot, imap_user))
    assert result.error is None and result.imported == 0
    assert _stored(conn) == 0
    assert conn.execute("SELECT count(*) FROM xtmail.location").fetchone() == (0,)

    assert privacy.allow_again(conn, account=account, mailbox="INBOX") == 6
    assert run_once(make_sync(db_dsn, dovecot, imap_user)).imported == 6
    assert _stored(conn) == 6
