"""The IMAP side of sync: one blocking connection, built on imap-tools and imaplib.

imap-tools opens the connection (IMAPS, STARTTLS or, only when configured, plain), logs in
(LOGIN or XOAUTH2), lists folders and runs IDLE. The hot path, ``UID FETCH <set> (UID
INTERNALDATE BODY.PEEK[])``, goes straight to the underlying ``imaplib`` client: imap-tools'
``fetch()`` builds a ``MailMessage`` per message (parsing it with the email package), which
we do not want here — the importer parses once, in worker processes, from the raw bytes.

Every method blocks: call them from a worker thread, never the GUI thread. Errors come out
as the package's hierarchy: network trouble as :class:`TransientImapError` (reconnect with
backoff), refused credentials as :class:`AuthenticationFailed`, an unverifiable
certificate as :class:`CertificateError`, a missing folder as :class:`ConfigError`.
"""

from __future__ import annotations

import functools
import hashlib
import imaplib
import os
import re
import selectors
import socket
import ssl
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Protocol

from imap_tools import MailBox, MailBoxStartTls, MailBoxUnencrypted
from imap_tools.errors import (
    MailboxLoginError,
    MailboxStarttlsError,
    MailboxTaggedResponseError,
)
from imap_tools.utils import encode_folder

from xtmail.sync.errors import (
    AuthenticationFailed,
    CertificateError,
    ConfigError,
    ImapError,
    TransientImapError,
)
from xtmail.sync.imap.credentials import Credential
from xtmail.sync.imap.settings import (
    AccountSettings,
    AuthMethod,
    Security,
    normalize_fingerprint,
)

SPECIAL_USE = frozenset({
    "\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash",
})
_FETCH_ITEMS = "(UID INTERNALDATE BODY.PEEK[])"
_UID = re.compile(rb"UID (\d+)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_INTERNALDATE = re.compile(rb'INTERNALDATE "([^"]+)"')
_STATUS_ITEM = re.compile(rb"(UIDVALIDITY|UIDNEXT|HIGHESTMODSEQ|MESSAGES) (\d+)")
_MAILBOXID = re.compile(rb"MAILBOXID \(([A-Za-z0-9_-]{1,255})\)")
#: getaddrinfo's "no such name" answers: a wrong host name, not an outage.
_UNKNOWN_HOST = frozenset(
    code for code in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None))
    if code is not None
)
#: How servers refuse LOGIN before TLS: RFC 5530's response code (Dovecot), Cyrus' text.
_TLS_REQUIRED = re.compile(r"PRIVACYREQUIRED|only available under a layer", re.IGNORECASE)
#: How often an IDLE wait looks at its stop flag: bounds how long stop() takes.
IDLE_TICK = 0.25
#: RFC 2177: re-issue IDLE at least every 29 minutes.
IDLE_MAX = 25 * 60


@dataclass(frozen=True)
class FolderInfo:
    """A folder from LIST: its name, hierarchy delimiter and flags (special-use ones too)."""

    name: str
    delimiter: str
    flags: tuple[str, ...]

    @property
    def special_use(self) -> str | None:
        return next((f for f in self.flags if f in SPECIAL_USE), None)

    @property
    def selectable(self) -> bool:
        return not any(f.lower() in {"\\noselect", "\\nonexistent"} for f in self.flags)


@dataclass(frozen=True)
class FolderStatus:
    """A folder's identity and counters. ``highestmodseq`` is None without CONDSTORE."""

    uidvalidity: int
    uidnext: int
    messages: int
    highestmodseq: int | None
    #: The folder's identity (RFC 8474 MAILBOXID), kept across renames; None where the
    #: server does not offer OBJECTID.
    mailboxid: str | None = None


@dataclass(frozen=True, slots=True)
class FetchedMessage:
    uid: int
    internal_date: datetime | None
    raw: bytes


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, as ``AB:CD:...``."""
    return normalize_fingerprint(hashlib.sha256(der).hexdigest())


def ssl_context_for(account: AccountSettings) -> ssl.SSLContext:
    """Verification on (system CAs plus ``ca_file``), unless a fingerprint is pinned."""
    if account.pin_sha256:
        # The pin replaces chain and name checks: we compare the peer's certificate after the
        # handshake (ImapConnection._check_pin), so the handshake itself must not refuse it.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context
    stamp = (0, 0)
    if account.ca_file:
        try:
            found = os.stat(account.ca_file)
        except OSError:
            # Not cached: loading it raises, as it always did.
            return _verifying_context.__wrapped__(account.ca_file, (0, 0))
        stamp = (found.st_mtime_ns, found.st_size)
    return _verifying_context(account.ca_file, stamp)


@functools.lru_cache(maxsize=16)
def _verifying_context(ca_file: str, stamp: tuple[int, int]) -> ssl.SSLContext:
    """One context per CA file (and its version, ``stamp``), shared by every connection: a
    context holds the system's CA certificates, most of a megabyte, and ``xtmail serve``
    keeps a connection per account. Contexts are safe to share between threads."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def peer_fingerprint(account: AccountSettings) -> str | None:
    """Fetch the server's certificate without verifying it, to show its fingerprint."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    port = account.effective_port
    try:
        if account.security is Security.IMAPS:
            with (
                socket.create_connection((account.host, port), timeout=account.timeout) as raw,
                context.wrap_socket(raw, server_hostname=account.host) as tls,
            ):
                der = tls.getpeercert(binary_form=True)
        else:
            client = imaplib.IMAP4(account.host, port, timeout=account.timeout)
            try:
                client.starttls(context)
                sock: Any = client.sock  # an ssl.SSLSocket after STARTTLS
                der = sock.getpeercert(binary_form=True)
            finally:
                client.shutdown()
    except (OSError, imaplib.IMAP4.error):
        return None
    return fingerprint(der) if der else None


class ImapConnection:
    """One logged-in IMAP session. Use as a context manager, or call :meth:`close`.

    Not thread-safe: one thread at a time (the sync engine's worker thread).
    """

    def __init__(self, account: AccountSettings, credential: Credential) -> None:
        self.account = account
        self._mailbox: Any = None
        self._selected: str | None = None
        self._caps: tuple[str, ...] = ()
        self._open(credential)

    # -- connection ---------------------------------------------------------------------------
    def _open(self, credential: Credential) -> None:
        account = self.account
        port = account.effective_port
        mailbox: Any
        try:
            if account.security is Security.IMAPS:
                mailbox = MailBox(
                    account.host, port, timeout=account.timeout,
                    ssl_context=ssl_context_for(account),
                )
            elif account.security is Security.STARTTLS:
                mailbox = MailBoxStartTls(
                    account.host, port, timeout=account.timeout,
                    ssl_context=ssl_context_for(account),
                )
            else:
                mailbox = MailBoxUnencrypted(account.host, port, timeout=account.timeout)
        except ssl.SSLCertVerificationError as exc:
            raise self._certificate_error(exc) from exc
        except MailboxStarttlsError as exc:
            raise ConfigError(
                f"The server {account.host}:{port} does not offer STARTTLS.",
                hint="Choose IMAPS (usually port 993) in the account settings.",
            ) from exc
        except socket.gaierror as exc:
            if exc.errno in _UNKNOWN_HOST:
                raise ConfigError(
                    f"The host name {account.host!r} is unknown ({exc.strerror}).",
                    hint="Check the IMAP server's host name in the account settings.",
                ) from exc
            raise TransientImapError(
                f"Cannot reach {account.host}:{port} (its name cannot be looked up now: "
                f"{exc.strerror})",
                hint="Check the network connection; xtmail retries by itself.",
            ) from exc
        except (OSError, imaplib.IMAP4.abort, EOFError) as exc:
            raise TransientImapError(
                f"Cannot reach {account.host}:{port} ({_reason(exc)})",
                hint="Check the host name and port, and that the server is reachable.",
            ) from exc
        except imaplib.IMAP4.error as exc:
            raise ImapError(
                f"The server {account.host}:{port} refused the connection: {exc}"
            ) from exc
        self._mailbox = mailbox
        try:
            if account.security is not Security.NONE and account.pin_sha256:
                self._check_pin()
            self._login(credential)
            with self._errors():
                # The greeting's list is pre-login; servers announce more once logged in.
                typ, data = self._mailbox.client.capability()
                if typ == "OK" and data and data[0]:
                    self._caps = tuple(data[0].decode("ascii", "replace").upper().split())
                if "CONDSTORE" in self.capabilities and "ENABLE" in self.capabilities:
                    # Makes EXAMINE report HIGHESTMODSEQ, our cheap "anything changed?" test.
                    self._mailbox.client.enable("CONDSTORE")
        except BaseException:
            self.close()
            raise

    def _certificate_error(self, exc: ssl.SSLCertVerificationError) -> CertificateError:
        host = self.account.host
        pin = peer_fingerprint(self.account)
        reason = exc.verify_message or exc.reason or str(exc)
        hint = (
            f"If you trust this server, pin its SHA-256 fingerprint {pin} in the account "
            "settings."
            if pin
            else "If you trust this server, pin its SHA-256 fingerprint in the account settings."
        )
        error = CertificateError(
            f"The server's certificate for {host} could not be verified: {reason}.", hint=hint
        )
        error.fingerprint = pin
        return error

    def _check_pin(self) -> None:
        der = self._mailbox.client.sock.getpeercert(binary_form=True)
        actual = fingerprint(der) if der else "(none)"
        if actual != normalize_fingerprint(self.account.pin_sha256):
            error = CertificateError(
                f"The server's certificate for {self.account.host} does not match the pinned "
                f"fingerprint: it is {actual}.",
                hint="If the server's certificate was renewed on purpose, pin the new "
                "fingerprint in the account settings; otherwise someone may be intercepting "
                "the connection.",
            )
            error.fingerprint = actual
            raise error

    def _login(self, credential: Credential) -> None:
        user = self.account.login or self.account.user
        client = self._mailbox.client
        if credential.method is AuthMethod.PASSWORD and "LOGINDISABLED" in client.capabilities:
            raise self._tls_required()
        try:
            if credential.method is AuthMethod.XOAUTH2:
                self._mailbox.xoauth2(user, credential.secret, initial_folder=None)
            elif user.isascii() and credential.secret.isascii():
                self._mailbox.login(user, credential.secret, initial_folder=None)
            else:
                self._mailbox.login_utf8(user, credential.secret, initial_folder=None)
        except (MailboxLoginError, imaplib.IMAP4.error) as exc:
            if isinstance(exc, imaplib.IMAP4.abort):
                raise TransientImapError(f"The connection broke during login: {exc}") from exc
            if _TLS_REQUIRED.search(_text(exc)):
                raise self._tls_required() from exc
            raise AuthenticationFailed(
                f"The server {self.account.host} refused the login of {user}.",
                hint="Check the user name and password (or the OAuth2 sign-in) in the account "
                "settings; synchronization of this account is stopped until then.",
            ) from exc
        except (OSError, EOFError) as exc:
            raise TransientImapError(f"The connection broke during login: {exc}") from exc

    def _tls_required(self) -> ConfigError:
        return ConfigError(
            f"The server {self.account.host}:{self.account.effective_port} accepts a login "
            "only over an encrypted connection.",
            hint="Choose STARTTLS (usually port 143) or IMAPS (usually port 993) as the "
            "security in the account settings.",
        )

    def close(self) -> None:
        """Log out; a connection that is already broken is just dropped."""
        mailbox, self._mailbox = self._mailbox, None
        if mailbox is None:
            return
        client = getattr(mailbox, "client", None)
        if client is None:
            return
        try:
            client.logout()
        except (OSError, EOFError, imaplib.IMAP4.error):
            try:
                client.shutdown()
            except OSError:
                pass

    def __enter__(self) -> ImapConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _errors(self, what: str = "") -> Iterator[None]:
        try:
            yield
        except (OSError, EOFError, imaplib.IMAP4.abort) as exc:
            raise TransientImapError(
                f"The connection to {self.account.host} was lost{what}: {exc}",
                hint="xtmail reconnects by itself.",
            ) from exc

    @property
    def client(self) -> Any:
        if self._mailbox is None:
            raise TransientImapError("The IMAP connection is closed.")
        return self._mailbox.client

    @property
    def capabilities(self) -> tuple[str, ...]:
        return self._caps or tuple(str(c).upper() for c in self.client.capabilities)

    # -- folders ------------------------------------------------------------------------------
    def list_folders(self) -> list[FolderInfo]:
        with self._errors(" while listing folders"):
            found = self._mailbox.folder.list()
        return [FolderInfo(f.name, f.delim, tuple(f.flags)) for f in found]

    def status(self, folder: str) -> FolderStatus:
        """STATUS without selecting: the cheap "has anything arrived?" question."""
        items = "(UIDVALIDITY UIDNEXT MESSAGES"
        items += " HIGHESTMODSEQ" if "CONDSTORE" in self.capabilities else ""
        items += " MAILBOXID)" if "OBJECTID" in self.capabilities else ")"
        with self._errors(f" while checking {folder}"):
            if self._selected == folder:
                # Dovecot answers STATUS on the selected mailbox from this session's view,
                # which only moves on when the session syncs: NOOP does that first.
                self.client.noop()
            typ, data = self.client._simple_command("STATUS", encode_folder(folder), items)
            typ, data = self.client._untagged_response(typ, data, "STATUS")
        if typ != "OK":
            raise self._no_folder(folder, data)
        text = b" ".join(d for d in data if isinstance(d, bytes))
        found = {k.decode(): int(v) for k, v in _STATUS_ITEM.findall(text)}
        return FolderStatus(
            found.get("UIDVALIDITY", 0), found.get("UIDNEXT", 0), found.get("MESSAGES", 0),
            found.get("HIGHESTMODSEQ"), _mailboxid(text),
        )

    def examine(self, folder: str) -> FolderStatus:
        """Select ``folder`` read-only (EXAMINE): fetching can never change its flags."""
        with self._errors(f" while opening {folder}"):
            typ, data = self.client.select(encode_folder(folder), readonly=True)
        if typ != "OK":
            raise self._no_folder(folder, data)
        self._selected = folder
        client = self.client

        def number(name: str) -> int | None:
            _, values = client.response(name)
            value = values[-1] if values and values[-1] is not None else None
            return int(value) if value is not None else None

        exists = int(data[0]) if data and data[0] else 0
        _, codes = client.response("MAILBOXID")  # the response code [MAILBOXID (id)]
        return FolderStatus(
            number("UIDVALIDITY") or 0, number("UIDNEXT") or 0, exists, number("HIGHESTMODSEQ"),
            _mailboxid(b"MAILBOXID " + codes[-1]) if codes and codes[-1] else None,
        )

    def _no_folder(self, folder: str, data: object) -> ConfigError:
        return ConfigError(
            f"The folder {folder!r} cannot be opened on {self.account.host}: {_text(data)}",
            hint="Untick it or pick another folder in the Email settings.",
        )

    # -- messages -----------------------------------------------------------------------------
    def uids_after(self, last_uid: int, since: date | None = None) -> list[int]:
        """UIDs above ``last_uid`` in the selected folder (and on/after ``since``), ascending."""
        criteria = [f"UID {last_uid + 1}:*"]
        if since is not None:
            criteria.append(f"SINCE {since.day}-{_MONTHS[since.month - 1]}-{since.year}")
        with self._errors(" while searching"):
            typ, data = self.client.uid("SEARCH", *criteria)
        if typ != "OK":
            raise ImapError(f"UID SEARCH failed in {self._selected}: {_text(data)}")
        # "N:*" matches the highest UID even when it is below N (RFC 3501 6.4.8): filter.
        uids = {int(u) for u in b" ".join(d for d in data if d).split()}
        return sorted(u for u in uids if u > last_uid)

    def uids_larger(self, last_uid: int, size: int) -> list[int]:
        """UIDs above ``last_uid`` of messages larger than ``size`` bytes, ascending. The
        server answers from its index: 7 ms for 20,000 messages, where reading every size
        takes 75 ms."""
        with self._errors(" while searching"):
            typ, data = self.client.uid("SEARCH", f"UID {last_uid + 1}:*", f"LARGER {size}")
        if typ != "OK":
            raise ImapError(f"UID SEARCH LARGER failed in {self._selected}: {_text(data)}")
        uids = {int(u) for u in b" ".join(d for d in data if d).split()}
        return sorted(u for u in uids if u > last_uid)

    def sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """UID -> RFC822.SIZE for ``uids`` (a message expunged meanwhile is left out).

        The server keeps sizes in its index; the answer is one line per message (about
        75 ms for 20,000), so ask for the few large ones only (:meth:`uids_larger`).
        """
        if not uids:
            return {}
        with self._errors(" while reading message sizes"):
            typ, data = self.client.uid("FETCH", uid_set(uids), "(UID RFC822.SIZE)")
        if typ != "OK":
            raise ImapError(f"UID FETCH RFC822.SIZE failed in {self._selected}: {_text(data)}")
        found: dict[int, int] = {}
        for part in data:
            line = part[0] if isinstance(part, tuple) else part
            if not isinstance(line, bytes):
                continue
            uid, size = _UID.search(line), _SIZE.search(line)
            if uid is not None and size is not None:
                found[int(uid.group(1))] = int(size.group(1))
        return found

    def fetch(self, uids: Sequence[int]) -> list[FetchedMessage]:
        """The raw bytes and INTERNALDATE of ``uids`` (BODY.PEEK: \\Seen stays untouched)."""
        if not uids:
            return []
        with self._errors(" while fetching"):
            typ, data = self.client.uid("FETCH", uid_set(uids), _FETCH_ITEMS)
        if typ != "OK":
            raise ImapError(f"UID FETCH failed in {self._selected}: {_text(data)}")
        out: list[FetchedMessage] = []
        pending: tuple[bytes, bytes] | None = None
        for part in data:
            if isinstance(part, tuple):
                pending = (part[0], part[1])
                continue
            if pending is None or not isinstance(part, bytes):
                continue
            head, raw = pending
            pending = None
            # Servers may put UID or INTERNALDATE after the literal: look on both sides.
            meta = head + b" " + part
            uid = _UID.search(meta)
            if uid is None:
                continue
            when = _INTERNALDATE.search(meta)
            out.append(FetchedMessage(int(uid.group(1)), _internal_date(when), raw))
        if pending is not None:  # last literal with no trailing ")" element
            head, raw = pending
            uid = _UID.search(head)
            if uid is not None:
                out.append(
                    FetchedMessage(int(uid.group(1)), _internal_date(_INTERNALDATE.search(head)),
                                   raw)
                )
        out.sort(key=_by_uid)
        return out

    def header(self, uid: int) -> bytes | None:
        """The header section of message ``uid`` of the selected folder, exactly as the
        server sends it (BODY.PEEK[HEADER]); None if there is no such message."""
        with self._errors(" while reading a header"):
            typ, data = self.client.uid("FETCH", str(uid), "(UID BODY.PEEK[HEADER])")
        if typ != "OK":
            raise ImapError(f"UID FETCH HEADER failed in {self._selected}: {_text(data)}")
        for part in data:
            if isinstance(part, tuple):
                found = _UID.search(part[0])
                if found is not None and int(found.group(1)) == uid:
                    return bytes(part[1])
        return None

    # -- waiting for mail -----------------------------------------------------------------------
    @property
    def supports_idle(self) -> bool:
        return "IDLE" in self.capabilities

    def idle(self, timeout: float, stop: StopFlag) -> bool:
        """IDLE on the selected folder until something happens, ``timeout`` passes or ``stop``
        is set. Returns whether the server reported a change.

        A connection that ends during the wait raises :class:`TransientImapError` at once,
        also when the server sent no ``* BYE`` (a killed server process, a dropped link):
        imap-tools' own poll returns nothing at end of file, which made the wait spin.
        """
        deadline = time.monotonic() + min(timeout, IDLE_MAX)
        idle = self._mailbox.idle
        with self._errors(" while waiting for new mail"):
            try:
                idle.start()
            except MailboxTaggedResponseError as exc:
                raise ImapError(f"The server {self.account.host} refused IDLE: "
                                f"{_text(exc)}") from exc
            broken = True
            try:
                while not stop.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    line = self._idle_line(min(IDLE_TICK, left))
                    if line is None:
                        continue
                    if line.startswith(b"* BYE"):
                        raise TransientImapError(
                            f"The server {self.account.host} ended the session: "
                            f"{_text(line)}", hint="xtmail reconnects by itself.")
                    if b"EXISTS" in line or b"RECENT" in line or b"FETCH" in line:
                        broken = False
                        return True
                broken = False
                return False
            finally:
                if not broken:
                    idle.stop()

    def _idle_line(self, wait: float) -> bytes | None:
        """The next line the server sends within ``wait`` seconds, or None; raises
        :class:`TransientImapError` when the connection has ended."""
        client = self.client
        if not _ahead(client):
            if not _readable(client.sock, wait):
                return None
            try:
                if not _ahead(client, strict=True):
                    raise TransientImapError(
                        f"The connection to {self.account.host} ended without a word from "
                        "the server while waiting for new mail.",
                        hint="xtmail reconnects by itself.")
            except ssl.SSLWantReadError:
                return None  # part of a TLS record, or TLS housekeeping: no line yet
        line: bytes = client._get_line()
        return line

    def noop(self) -> None:
        with self._errors():
            self.client.noop()


def _ahead(client: Any, *, strict: bool = False) -> bytes:
    """What the connection has received and not yet read, without waiting: its buffer or
    else one read from the socket. ``b""`` is nothing now or, after the socket was seen
    readable, the end of the connection. ``strict`` lets a TLS socket's "nothing yet"
    (``ssl.SSLWantReadError``) through, so that it is not taken for the end."""
    sock = client.sock
    previous = sock.gettimeout()
    sock.settimeout(0)
    try:
        data: bytes = client.file.peek(1)
        return data
    except ssl.SSLWantReadError:
        if strict:
            raise
        return b""
    except BlockingIOError:
        return b""
    finally:
        sock.settimeout(previous)


def _readable(sock: socket.socket, wait: float) -> bool:
    """Whether ``sock`` has something to read (data, or its end) within ``wait`` seconds."""
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(wait))


def _mailboxid(text: bytes) -> str | None:
    match = _MAILBOXID.search(text)
    return match.group(1).decode("ascii") if match else None


def _reason(exc: BaseException) -> str:
    """Why a connection attempt failed, in a few words."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "no answer, timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return _text(exc) or type(exc).__name__


def _text(data: object) -> str:
    """A server's response as text: ``[b'Mailbox does not exist']`` becomes
    ``Mailbox does not exist``."""
    if isinstance(data, bytes | bytearray):
        return bytes(data).decode("utf-8", "replace").strip()
    if isinstance(data, list | tuple):
        return " ".join(t for t in (_text(item) for item in data) if t)
    if data is None:
        return ""
    if isinstance(data, BaseException):
        return _text(data.args[0]) if len(data.args) == 1 else str(data)
    return str(data)


class StopFlag(Protocol):
    """What a long wait polls to end early: a ``threading.Event`` or anything with its
    ``is_set()``."""

    def is_set(self) -> bool: ...


def _by_uid(message: FetchedMessage) -> int:
    return message.uid


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


# RFC 3501 date-time: "dd-Mon-yyyy hh:mm:ss +zzzz", the day maybe space-padded.
_DATE_TIME = re.compile(
    rb" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"
)
_MONTH_NUMBER = {m.lower().encode(): n for n, m in enumerate(_MONTHS, start=1)}


@functools.lru_cache(maxsize=64)
def _zone(sign: bytes, hours: int, minutes: int) -> timezone:
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if sign == b"-" else offset)


def _internal_date(match: re.Match[bytes] | None) -> datetime | None:
    # Read by hand: strptime took a tenth of the sync thread's time at thousands per second.
    if match is None:
        return None
    parts = _DATE_TIME.fullmatch(match.group(1))
    month = _MONTH_NUMBER.get(parts.group(2).lower()) if parts else None
    if parts is None or month is None:
        return None
    day, _, year, hour, minute, second, sign, zone_h, zone_m = parts.groups()
    try:
        return datetime(int(year), month, int(day), int(hour), int(minute), int(second),
                        tzinfo=_zone(sign, int(zone_h), int(zone_m)))
    except ValueError:
        return None


def uid_set(uids: Sequence[int]) -> str:
    """``1:3,7,9:10`` from ascending UIDs: short commands even for thousands of UIDs."""
    parts: list[str] = []
    start = prev = uids[0]
    for uid in uids[1:]:
        if uid == prev + 1:
            prev = uid
            continue
        parts.append(f"{start}:{prev}" if prev != start else str(start))
        start = prev = uid
    parts.append(f"{start}:{prev}" if prev != start else str(start))
    return ",".join(parts)
