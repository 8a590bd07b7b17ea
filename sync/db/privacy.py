"""Who sees which mail, and removing what should never have been imported (docs/privacy.md).

The rules live in the database and are enforced there (row security, migration 0012); this
module is the Python side of its functions. Every call runs as the connection's role: the
database checks the caller's xTuple privileges (``ViewAllEmail``, ``DeleteAllEmail``,
``MaintainEmailVisibility``) inside the functions, so a program cannot do more than its
user may. ``conn`` is a psycopg connection; each call is one statement (its own transaction
in autocommit mode, or part of the caller's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from xtmail.sync.db.errors import translated

#: xTuple privileges xtmail registers (rows in ``priv``), granted on xTuple's user and group
#: screens.
VIEW_ALL = "ViewAllEmail"
DELETE_ALL = "DeleteAllEmail"
MAINTAIN_VISIBILITY = "MaintainEmailVisibility"
PRIVILEGES = (VIEW_ALL, DELETE_ALL, MAINTAIN_VISIBILITY)


@dataclass(frozen=True, slots=True)
class Removal:
    """What a removal did: messages removed, and messages left because they are not the
    caller's to remove (others hold copies; only ``DeleteAllEmail`` removes those)."""

    removed: int
    refused: int


@dataclass(frozen=True, slots=True)
class VisibilityRule:
    """One account's (``mailbox`` '') or folder's rule."""

    account: str
    mailbox: str
    private: bool
    owner: str | None
    set_by: str
    set_at: datetime


@dataclass(frozen=True, slots=True)
class BlockedSender:
    """An address, or a domain with its subdomains, whose mail is never imported."""

    pattern: str
    any_party: bool
    reason: str


def set_visibility(conn: psycopg.Connection, account: str, mailbox: str = "", *,
                   private: bool | None, owner: str | None = None) -> int:
    """Make an account's (``mailbox`` '') or a folder's mail private (``private`` True; read
    by whoever imported it and by ``owner``) or shared (False), or drop the rule (None: the
    account's rule, else shared, applies). Returns how many stored messages were
    re-evaluated. Needs MaintainEmailVisibility unless every copy in the account is the
    caller's own and ``owner`` is the caller or None."""
    with translated("to set the mail's visibility"):
        row = conn.execute("SELECT xtmail.set_visibility(%s, %s, %s, %s)",
                           (account, mailbox, private, owner)).fetchone()
    return int(row[0]) if row else 0


def visibility_rules(conn: psycopg.Connection) -> list[VisibilityRule]:
    with translated("to read the visibility rules"):
        rows = conn.execute(
            "SELECT vr_account, vr_mailbox, vr_private, vr_owner, vr_set_by, vr_set_at "
            "FROM xtmail.visibility_rule ORDER BY 1, 2").fetchall()
    return [VisibilityRule(*r) for r in rows]


def _removal(row: tuple[object, ...] | None) -> Removal:
    if row is None:
        return Removal(0, 0)
    return Removal(int(row[0]), int(row[1]))  # type: ignore[call-overload]


def remove_messages(conn: psycopg.Connection, eml_ids: Sequence[int], *, reason: str = "",
                    keep_out: bool = True) -> Removal:
    """Remove messages entirely (bytes, text, addresses, ties, search words, locations),
    recording who removed them and when; ``keep_out``: later imports skip them."""
    with translated("to remove the mail"):
        row = conn.execute("SELECT * FROM xtmail.remove_mail(%b::integer[], %s, %s)",
                           (list(eml_ids), reason, keep_out)).fetchone()
    return _removal(row)


def remove_folder(conn: psycopg.Connection, account: str, mailbox: str | None = None, *,
                  reason: str = "", keep_out: bool = True) -> Removal:
    """Remove every message found in a folder (``mailbox``) or a whole account (None)."""
    with translated("to remove the mail"):
        row = conn.execute("SELECT * FROM xtmail.remove_folder_mail(%s, %s, %s, %s)",
                           (account, mailbox, reason, keep_out)).fetchone()
    return _removal(row)


def allow_again(conn: psycopg.Connection, eml_ids: Sequence[int] = (), *,
                account: str | None = None, mailbox: str | None = None) -> int:
    """Let removed mail be imported again: the messages that had ``eml_ids``, or what was
    removed with a folder or account (whose sync state is reset, so the next sync reads it
    again). The remover, or DeleteAllEmail. Returns how many removals were cleared."""
    with translated("to allow the mail again"):
        row = conn.execute("SELECT xtmail.allow_again(%b::integer[], %s, %s)",
                           (list(eml_ids), account, mailbox)).fetchone()
    return int(row[0]) if row else 0


def block_sender(conn: psycopg.Connection, pattern: str, *, any_party: bool = False,
                 reason: str = "") -> None:
    """Never import mail from ``pattern`` (an address, or a domain and its subdomains);
    ``any_party``: nor mail to or copied to it. Needs MaintainEmailVisibility."""
    with translated("to block the sender"):
        conn.execute("SELECT xtmail.block_sender(%s, %s, %s, true)",
                     (pattern, any_party, reason))


def unblock_sender(conn: psycopg.Connection, pattern: str) -> None:
    with translated("to unblock the sender"):
        conn.execute("SELECT xtmail.block_sender(%s, false, '', false)", (pattern,))


def blocked_senders(conn: psycopg.Connection) -> list[BlockedSender]:
    with translated("to read the blocked senders"):
        rows = conn.execute("SELECT bs_pattern, bs_any_party, bs_reason "
                            "FROM xtmail.blocked_sender ORDER BY 1").fetchall()
    return [BlockedSender(*r) for r in rows]


def remove_blocked(conn: psycopg.Connection, reason: str = "blocked sender") -> Removal:
    """Apply the blocked senders to what is stored: their mail is removed and kept out."""
    with translated("to remove the blocked senders' mail"):
        row = conn.execute("SELECT * FROM xtmail.remove_blocked_mail(%s)",
                           (reason,)).fetchone()
    return _removal(row)
