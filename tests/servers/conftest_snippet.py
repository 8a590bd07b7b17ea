"""Dovecot fixtures, to be imported into ``tests/conftest.py``::

    from tests.servers.conftest_snippet import dovecot, imap_user    # noqa: F401

``dovecot`` is one server per test session (XOAUTH2 enabled); ``imap_user`` gives each test
its own account on it, so tests never see each other's mail.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import NamedTuple

import pytest

from tests.servers.dovecot import DovecotServer


class ImapAccount(NamedTuple):
    user: str
    password: str


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    """A running Dovecot for the whole session; fails (never skips) if it is not installed."""
    server = DovecotServer(tmp_path_factory.mktemp("dovecot"), oauth2=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def imap_user(dovecot: DovecotServer) -> ImapAccount:
    """A fresh account with an empty INBOX, unpackable as ``user, password``."""
    account = ImapAccount(f"user-{secrets.token_hex(6)}", secrets.token_urlsafe(12))
    dovecot.add_user(account.user, account.password)
    return account
