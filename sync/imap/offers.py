"""A user's accounts offered to the company's mail server, from the desktop (docs/serve.md,
"Accounts users offer").

:class:`DatabaseOffers` is what the Email page of User Preferences is given to offer an
account ("Let the company mail server sync this account") and to withdraw the offer. It
writes the account's settings, never its secret, through the database functions of
migration 0015, as the user the connection logs in as. Blocking: the page calls it in a
worker thread.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from xtmail.sync.db import offered
from xtmail.sync.db.errors import translated
from xtmail.sync.imap.settings import AccountSettings, MailAccount, SyncSettings


class DatabaseOffers:
    """Offers and withdraws the user's accounts; ``connect()`` opens an autocommit
    connection as the user (one per call: offers are rare)."""

    def __init__(self, connect: Callable[[], psycopg.Connection]) -> None:
        self._connect = connect

    def offer(self, entry: MailAccount, options: SyncSettings) -> None:
        """Offer ``entry`` (or update the offer) with the contact policy of ``options``."""
        account = entry.account
        with translated("to offer the account to the mail server"):
            conn = self._connect()
        with conn:
            offered.offer_account(
                conn, host=account.host, user=account.user, port=account.port,
                security=account.security.value, auth=account.auth.value,
                folders=entry.folders, since=options.since, pin_sha256=account.pin_sha256,
                own_addresses=options.own_addresses,
                excluded_domains=options.excluded_domains,
                create_contacts=options.create_contacts)

    def withdraw(self, account: AccountSettings) -> None:
        """Withdraw the offer of ``account``, if there is one."""
        with translated("to withdraw the account from the mail server"):
            conn = self._connect()
        with conn:
            offered.withdraw_account(conn, account.host, account.user)
