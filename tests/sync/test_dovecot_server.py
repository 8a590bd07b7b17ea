"""The throwaway Dovecot of tests/helpers/dovecot.py: TLS, seeding, APPEND, restarts, XOAUTH2."""

from __future__ import annotations

import imaplib
import re
import secrets
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import dovecot as dovecot_module
from tests.helpers.dovecot import (
    INSTALL_HINT,
    DovecotServer,
    ImapAccount,
    imap_quote,
    iter_generated_messages,
)

TIMEOUT = 10


def _message(subject: str) -> bytes:
    return (
        f"From: a@example.com\r\nTo: b@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{secrets.token_hex(8)}@xtmail.test>\r\n\r\nHello\r\nWorld\r\n"
    ).encode()


def _status(imap: imaplib.IMAP4, mailbox: str) -> dict[str, int]:
    typ, data = imap.status(imap_quote(mailbox), "(MESSAGES UIDVALIDITY UIDNEXT)")
    assert typ == "OK", data
    raw = data[0]
    assert isinstance(raw, bytes)
    inner = raw[raw.rindex(b"(") + 1 : raw.rindex(b")")].decode().split()
    return {key: int(value) for key, value in zip(inner[::2], inner[1::2], strict=True)}


def _uids(imap: imaplib.IMAP4, criterion: str) -> list[int]:
    typ, data = imap.uid("SEARCH", criterion)
    assert typ == "OK", data
    return [int(uid) for uid in (data[0] or b"").split()]


# -- TLS and authentication -----------------------------------------------------------------
def test_starttls_login_verifies_certificate(
    dovecot: DovecotServer,
    imap_user: ImapAccount,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(3))
    with imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=TIMEOUT) as imap:
        assert "STARTTLS" in imap.capabilities
        assert imap.starttls(ssl_context=dovecot.ssl_context())[0] == "OK"
        assert isinstance(imap.sock, ssl.SSLSocket)
        imap.login(*imap_user)
        typ, data = imap.select("INBOX")
        assert (typ, data) == ("OK", [b"3"])


def test_imaps_login_verifies_certificate(
    dovecot: DovecotServer,
    imap_user: ImapAccount,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(2))
    context = dovecot.ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    with imaplib.IMAP4_SSL(
        dovecot.host, dovecot.imaps_port, ssl_context=context, timeout=TIMEOUT
    ) as imap:
        imap.login(*imap_user)
        typ, data = imap.select("INBOX")
        assert (typ, data) == ("OK", [b"2"])
        typ, data = imap.capability()
        capabilities = (data[0] or b"").decode().split()
    for needed in ("IDLE", "CONDSTORE", "QRESYNC", "UIDPLUS", "MOVE", "SPECIAL-USE", "ENABLE"):
        assert needed in capabilities


def test_certificate_also_names_localhost(dovecot: DovecotServer) -> None:
    with (
        socket.create_connection((dovecot.host, dovecot.imaps_port), timeout=TIMEOUT) as sock,
        dovecot.ssl_context().wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        assert tls.recv(64).startswith(b"* OK")


def test_system_trust_store_is_refused_on_imaps(dovecot: DovecotServer) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL(
            dovecot.host,
            dovecot.imaps_port,
            ssl_context=ssl.create_default_context(),
            timeout=TIMEOUT,
        )


def test_system_trust_store_is_refused_on_starttls(dovecot: DovecotServer) -> None:
    imap = imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=TIMEOUT)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            imap.starttls(ssl_context=ssl.create_default_context())
    finally:
        # The failed handshake already closed the socket; imaplib cannot log out any more.
        imap.file.close()
        imap.sock.close()


def test_plaintext_login_is_refused_without_tls(
    dovecot: DovecotServer,
    imap_user: ImapAccount,
) -> None:
    with imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=TIMEOUT) as imap:
        assert "LOGINDISABLED" in imap.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            imap.login(*imap_user)
        with pytest.raises(imaplib.IMAP4.error):
            imap.authenticate(
                "PLAIN", lambda _: f"\0{imap_user.user}\0{imap_user.password}".encode()
            )
        assert imap.state == "NONAUTH"


def test_add_user_changes_a_password_at_once(
    dovecot: DovecotServer,
    imap_user: ImapAccount,
) -> None:
    dovecot.add_user(imap_user.user, "a new password")
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        dovecot.login(*imap_user).logout()
    with dovecot.login(imap_user.user, "a new password") as imap:
        assert imap.state == "AUTH"


def test_xoauth2_good_token_logs_in_bad_token_fails(
    dovecot: DovecotServer,
    imap_user: ImapAccount,
) -> None:
    user, token = imap_user.user, secrets.token_urlsafe(24)
    dovecot.add_oauth_token(user, token)
    other = f"other-{secrets.token_hex(4)}"
    dovecot.add_oauth_token(other, secrets.token_urlsafe(24))

    def xoauth2(name: str, bearer: str) -> bytes:
        return f"user={name}\x01auth=Bearer {bearer}\x01\x01".encode()

    context = dovecot.ssl_context()
    with imaplib.IMAP4_SSL(
        dovecot.host, dovecot.imaps_port, ssl_context=context, timeout=TIMEOUT
    ) as imap:
        typ, _ = imap.authenticate("XOAUTH2", lambda _: xoauth2(user, token))
        assert typ == "OK"
        assert imap.select("INBOX")[0] == "OK"
    with imaplib.IMAP4_SSL(
        dovecot.host, dovecot.imaps_port, ssl_context=context, timeout=TIMEOUT
    ) as imap:
        oauthbearer = f"n,a={user},\x01auth=Bearer {token}\x01\x01".encode()
        typ, _ = imap.authenticate("OAUTHBEARER", lambda _: oauthbearer)
        assert typ == "OK"
    # A wrong token, and a valid token presented for another user, both fail.
    for name, bearer in ((user, "not-a-token"), (other, token)):
        with imaplib.IMAP4_SSL(
            dovecot.host, dovecot.imaps_port, ssl_context=context, timeout=TIMEOUT
        ) as imap:

            def answer(_: bytes, response: bytes = xoauth2(name, bearer)) -> bytes:
                return response

            with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
                imap.authenticate("XOAUTH2", answer)
    # Passwords keep working on the same server.
    with dovecot.login(*imap_user) as imap:
        assert imap.state == "AUTH"


# -- seeding and APPEND -------------------------------------------------------------------
def test_seed_maildir_2000_unseen_messages_in_order(
    dovecot: DovecotServer,
    imap_user: ImapAccount,
) -> None:
    messages = list(iter_generated_messages(2000))
    started = time.perf_counter()
    dovecot.seed_maildir(imap_user.user, "INBOX", messages)
    elapsed = time.perf_counter() - started
    print(f"seeded 2000 messages in {elapsed:.3f} s ({2000 / elapsed:.0f}/s)")
    with dovecot.login(*imap_user) as imap:
        typ, data = imap.select("INBOX", readonly=True)
        assert (typ, data) == ("OK", [b"2000"])
        assert _uids(imap, "SEEN") == []
        assert _uids(imap, "UNSEEN") == list(range(1, 2001))
        # UIDs follow the seeding order, and the bytes come back unchanged.
        typ, data = imap.uid("FETCH", "1,2000", "(BODY.PEEK[])")
        assert typ == "OK"
        fetched: list[Any] = data  # typeshed says bytes | None; FETCH gives tuples too
        bodies = [item[1] for item in fetched if isinstance(item, tuple)]
        assert bodies == [messages[0], messages[-1]]


def test_seed_maildir_folder_seen_and_while_running(
    dovecot: DovecotServer,
    imap_user: ImapAccount,
) -> None:
    folder = "Archiv/Entwürfe & Co"
    dovecot.seed_maildir(imap_user.user, folder, iter_generated_messages(2), seen=True)
    with dovecot.login(*imap_user) as imap:
        typ, data = imap.lsub()
        assert typ == "OK"
        assert b'"Archiv/Entw&APw-rfe &- Co"' in b" ".join(item for item in data if item)
        typ, data = imap.select(imap_quote(folder))
        assert (typ, data) == ("OK", [b"2"])
        assert _uids(imap, "SEEN") == [1, 2]
        # New files show up on the next mailbox sync of a running session.
        dovecot.seed_maildir(imap_user.user, folder, iter_generated_messages(3))
        imap.noop()
        assert imap.response("EXISTS")[1][-1] == b"5"
        assert _uids(imap, "UNSEEN") == [3, 4, 5]


def test_append_returns_uid_and_message_round_trips(
    dovecot: DovecotServer,
    imap_user: ImapAccount,
) -> None:
    first, second = _message("first"), _message("second")
    uid1 = dovecot.append(*imap_user, "INBOX", first)
    uid2 = dovecot.append(*imap_user, "INBOX", second, flags=(r"\Seen", r"\Flagged"))
    assert (uid1, uid2) == (1, 2)
    assert dovecot.append(*imap_user, "Projects/New one", first) == 1  # created on TRYCREATE
    with dovecot.login(*imap_user) as imap:
        imap.select("INBOX")
        for uid, message in ((uid1, first), (uid2, second)):
            typ, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[])")
            assert typ == "OK" and isinstance(data[0], tuple)
            assert data[0][1] == message
        typ, data = imap.uid("FETCH", str(uid2), "(FLAGS)")
        assert isinstance(data[0], bytes)
        assert b"\\Seen" in data[0] and b"\\Flagged" in data[0]


def test_idle_reports_a_live_append(
    dovecot: DovecotServer,
    imap_user: ImapAccount,
) -> None:
    with dovecot.login(*imap_user) as imap:
        imap.select("INBOX")
        imap.send(b"idle1 IDLE\r\n")
        assert imap.readline().startswith(b"+")
        imap.sock.settimeout(TIMEOUT)
        dovecot.append(*imap_user, "INBOX", _message("pushed"))
        while not (line := imap.readline()).endswith(b" EXISTS\r\n"):
            assert line.startswith(b"* ")
        assert line == b"* 1 EXISTS\r\n"
        imap.send(b"DONE\r\n")
        while not (line := imap.readline()).startswith(b"idle1 "):
            assert line.startswith(b"* ")
        assert line.startswith(b"idle1 OK")


# -- restarts and UIDVALIDITY --------------------------------------------------------------
def test_restart_keeps_data_and_ports_and_cuts_sessions(
    dovecot: DovecotServer,
    imap_user: ImapAccount,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(4))
    ports = (dovecot.imap_port, dovecot.imaps_port)
    with dovecot.login(*imap_user) as imap:
        before = _status(imap, "INBOX")
    survivor = dovecot.login(*imap_user)
    try:
        survivor.select("INBOX")
        started = time.perf_counter()
        dovecot.restart()
        print(f"restart took {time.perf_counter() - started:.3f} s")
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            survivor.noop()
    finally:
        survivor.shutdown()
    assert (dovecot.imap_port, dovecot.imaps_port) == ports
    with dovecot.login(*imap_user) as imap:
        assert (
            _status(imap, "INBOX")
            == before
            == {
                "MESSAGES": 4,
                "UIDVALIDITY": before["UIDVALIDITY"],
                "UIDNEXT": 5,
            }
        )


def test_set_uidvalidity_change_renumbers_one_mailbox(
    dovecot: DovecotServer,
    imap_user: ImapAccount,
) -> None:
    dovecot.seed_maildir(imap_user.user, "INBOX", iter_generated_messages(3))
    dovecot.seed_maildir(imap_user.user, "Lists/python", iter_generated_messages(2))
    with dovecot.login(*imap_user) as imap:
        imap.select("INBOX")
        imap.uid("STORE", "1", "+FLAGS", r"(\Deleted)")
        imap.expunge()
        inbox, lists = _status(imap, "INBOX"), _status(imap, "Lists/python")
    assert inbox["MESSAGES"] == 2 and inbox["UIDNEXT"] == 4

    dovecot.set_uidvalidity_change(imap_user.user, "INBOX")
    with dovecot.login(*imap_user) as imap:
        new_inbox = _status(imap, "INBOX")
        assert new_inbox["UIDVALIDITY"] > inbox["UIDVALIDITY"]
        assert new_inbox["MESSAGES"] == 2 and new_inbox["UIDNEXT"] == 3  # renumbered from 1
        imap.select("INBOX")
        uidvalidity = str(new_inbox["UIDVALIDITY"]).encode()
        assert imap.response("UIDVALIDITY") == ("UIDVALIDITY", [uidvalidity])
        assert _status(imap, "Lists/python") == lists

    dovecot.set_uidvalidity_change(imap_user.user, "Lists/python")
    with dovecot.login(*imap_user) as imap:
        assert _status(imap, "Lists/python")["UIDVALIDITY"] > lists["UIDVALIDITY"]
        assert _status(imap, "INBOX") == new_inbox


# -- a standalone server ------------------------------------------------------------------
def test_standalone_server_starts_fast_and_stops_cleanly(tmp_path: Path) -> None:
    started = time.perf_counter()
    with DovecotServer(tmp_path) as server:
        print(f"DovecotServer() + start() took {time.perf_counter() - started:.3f} s")
        port = server.imaps_port
        server.add_user("alice", "secret pass: with colon")
        with server.login("alice", "secret pass: with colon") as imap:
            assert imap.state == "AUTH"
    with pytest.raises(ConnectionRefusedError), socket.create_connection((server.host, port)):
        pass


def test_missing_dovecot_fails_with_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(dovecot_module, "DOVECOT_FALLBACK", tmp_path / "dovecot")
    with pytest.raises(RuntimeError, match=re.escape(INSTALL_HINT)) as raised:
        DovecotServer(tmp_path)
    assert str(raised.value) == "Dovecot is not installed: apt-get install dovecot-imapd"
