"""Per-folder sync state in ``xtmail.folder_state`` and ``xtmail.location``, and the advisory
lock that lets one process at a time sync a folder. Written in the same transaction as the
messages a state covers (see :mod:`xtmail.sync.imap.folder_sync`)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

#: How much of a stored message is read to compare its header with the server's.
HEADER_BYTES = 256 * 1024
#: First key of our advisory locks ("xtml"): keeps them apart from other applications' locks.
LOCK_CLASS = 0x78746D6C

@dataclass
class FolderState:
    """What the last pass saw of a folder: ``mailboxid`` is the server's identity of the
    folder (RFC 8474), None where the server offers none."""

    uidvalidity: int
    last_uid: int
    highestmodseq: int | None
    mailboxid: str | None = None


def read_state(conn: psycopg.Connection, account: str, folder: str) -> FolderState | None:
    row = conn.execute(
        """SELECT fs_uidvalidity, fs_last_uid, fs_highestmodseq, fs_mailboxid
             FROM xtmail.folder_state
            WHERE fs_account = %s AND fs_mailbox = %s""",
        (account, folder),
    ).fetchone()
    if row is None:
        return None
    return FolderState(int(row[0]), int(row[1]), int(row[2]) if row[2] is not None else None,
                       row[3])


def write_state(
    conn: psycopg.Connection,
    account: str,
    folder: str,
    state: FolderState,
    *,
    forget_locations: bool = False,
    advance_only: bool = False,
) -> None:
    """Upsert the folder's state; call inside the transaction that stored its messages.

    ``forget_locations`` deletes every location row of the folder first: the server
    renumbered it, so the stored UIDs point at nothing, or at other messages (a folder
    renamed in its place with the same UIDVALIDITY). ``advance_only`` never lowers the
    stored last UID: batches committing out of order each write the mark they can vouch
    for, and a later commit may vouch for less. A ``mailboxid`` of None keeps the stored one.
    """
    if forget_locations:
        conn.execute(
            "DELETE FROM xtmail.location WHERE loc_account = %s AND loc_mailbox = %s",
            (account, folder),
        )
    conn.execute(
        """INSERT INTO xtmail.folder_state (fs_account, fs_mailbox, fs_uidvalidity, fs_last_uid,
                                            fs_highestmodseq, fs_mailboxid)
           VALUES (%s, %s, %s, %s, %s, %s)
           ON CONFLICT (fs_account, fs_mailbox) DO UPDATE
              SET fs_uidvalidity = EXCLUDED.fs_uidvalidity,
                  fs_last_uid = CASE WHEN %s THEN GREATEST(folder_state.fs_last_uid,
                                                           EXCLUDED.fs_last_uid)
                                     ELSE EXCLUDED.fs_last_uid END,
                  fs_highestmodseq = EXCLUDED.fs_highestmodseq,
                  fs_mailboxid = COALESCE(EXCLUDED.fs_mailboxid, folder_state.fs_mailboxid),
                  fs_updated_at = now()""",
        (account, folder, state.uidvalidity, state.last_uid, state.highestmodseq,
         state.mailboxid, advance_only),
    )


def last_stored_message(
    conn: psycopg.Connection, account: str, folder: str, uidvalidity: int, last_uid: int
) -> tuple[int, bytes] | None:
    """The highest stored UID up to ``last_uid`` and the first bytes of the message stored
    for it, as received at that location: enough to compare its header with the server's."""
    row = conn.execute(
        """SELECT loc_uid, substring(coalesce(loc_raw, eml_msg) FROM 1 FOR %s)
             FROM xtmail.location JOIN xtbatch.eml ON eml_id = loc_eml_id
            WHERE loc_account = %s AND loc_mailbox = %s AND loc_uidvalidity = %s
              AND loc_uid <= %s
            ORDER BY loc_uid DESC LIMIT 1""",
        (HEADER_BYTES, account, folder, uidvalidity, last_uid),
    ).fetchone()
    return (int(row[0]), bytes(row[1])) if row is not None else None


def stored_uids_above(
    conn: psycopg.Connection, account: str, folder: str, uidvalidity: int, last_uid: int
) -> set[int]:
    """UIDs above ``last_uid`` whose messages are stored: batches that committed ahead of an
    earlier one that did not (the process was killed, or the pass stopped)."""
    rows = conn.execute(
        """SELECT loc_uid FROM xtmail.location
            WHERE loc_account = %s AND loc_mailbox = %s AND loc_uidvalidity = %s
              AND loc_uid > %s""",
        (account, folder, uidvalidity, last_uid),
    ).fetchall()
    return {int(r[0]) for r in rows}


def _lock_args(account: str, folder: str) -> tuple[int, str]:
    return LOCK_CLASS, f"{account}\x1f{folder}"


def try_lock_folder(conn: psycopg.Connection, account: str, folder: str) -> bool:
    """Session-level lock: held until unlocked or the connection (the process) ends."""
    row = conn.execute(
        "SELECT pg_try_advisory_lock(%s, hashtext(%s))", _lock_args(account, folder)
    ).fetchone()
    return bool(row and row[0])


def unlock_folder(conn: psycopg.Connection, account: str, folder: str) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", _lock_args(account, folder))


def relax_commit(conn: psycopg.Connection) -> None:
    """Commit batches without waiting for the server to flush them to disk.

    A sync can lose its last batches only together with their folder state (one
    transaction), so a server that crashes before writing them out makes the next pass
    fetch those messages again: nothing lost, nothing doubled. Without the wait, a batch's
    commit costs no disk flush (milliseconds each on real disks; docs/sync.md). The rest of
    the server keeps its durable commits, and so do all other sessions.
    """
    conn.execute("SET synchronous_commit = off")


