"""Accounts users offer to the company's mail server (migration 0015, docs/serve.md).

A user offers one of their own accounts to ``xtmail serve`` (User Preferences: "Let the
company mail server sync this account"); the service synchronizes it with a credential the
administrator gave it, never a secret of the user's. Users act through functions that run
as their owner and touch only the rows of the session's login role: they cannot read other
users' offers, nor the table itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import psycopg

from xtmail.sync.db.errors import translated


@dataclass(frozen=True)
class OfferedAccount:
    """One account the session's user has offered (what they see of their offer)."""

    host: str
    port: int
    security: str
    user: str
    auth: str
    folders: tuple[str, ...]
    since: date | None
    offered: datetime

    @property
    def key(self) -> str:
        return f"{self.user}@{self.host}"


def offer_account(
    conn: psycopg.Connection, *, host: str, user: str, port: int = 0,
    security: str = "imaps", auth: str = "password", folders: Sequence[str] = ("INBOX",),
    since: date | None = None, pin_sha256: str = "", own_addresses: Sequence[str] = (),
    excluded_domains: Sequence[str] = (), create_contacts: bool = True,
) -> int:
    """Offer ``user@host`` to the mail server as the session's user (or update the offer);
    return its id. The other arguments are the account's sync settings (``SyncSettings``).
    Fails with PermissionDenied when another user offered it."""
    with translated("to offer the account to the mail server"):
        row = conn.execute(
            "SELECT xtmail.offer_account(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (host, port, security, user, auth, list(folders), since, pin_sha256,
             list(own_addresses), list(excluded_domains), create_contacts)).fetchone()
    return int(row[0]) if row else 0


def withdraw_account(conn: psycopg.Connection, host: str, user: str) -> bool:
    """Withdraw the session's user's offer of ``user@host``; whether there was one."""
    with translated("to withdraw the account from the mail server"):
        row = conn.execute("SELECT xtmail.withdraw_account(%s, %s)", (host, user)).fetchone()
    return bool(row and row[0])


def my_offered_accounts(conn: psycopg.Connection) -> list[OfferedAccount]:
    """The accounts the session's user has offered."""
    with translated("to list the accounts offered to the mail server"):
        rows = conn.execute("SELECT * FROM xtmail.my_offered_accounts()").fetchall()
    return [OfferedAccount(host, port, security, user, auth, tuple(folders), since, offered)
            for host, port, security, user, auth, folders, since, offered in rows]
