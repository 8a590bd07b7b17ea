"""Account and folder settings: plain dataclasses, validation, QSettings persistence.

The dataclasses import nothing from Qt so that the headless engine and the CLI use them
too; only :func:`load_settings` and :func:`save_settings` touch Qt, and they import it when
called. Passwords are never part of these settings: they live in the keyring
(:mod:`xtmail.sync.imap.credentials`).
"""

from __future__ import annotations

import enum
import re
import socket
import ssl
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from xtmail.sync.errors import ConfigError, XtmailError
from xtmail.sync.values import CONTACT_SCOPES, ImportPolicy

if TYPE_CHECKING:
    from PyQt6.QtCore import QSettings


class Security(enum.StrEnum):
    """How the connection is protected."""

    IMAPS = "imaps"  # TLS from the first byte (port 993)
    STARTTLS = "starttls"  # plain connection upgraded with STARTTLS before login (port 143)
    NONE = "none"  # no encryption; only when explicitly configured (test rigs, loopback)


class AuthMethod(enum.StrEnum):
    PASSWORD = "password"  # noqa: S105 (a method name, not a secret)
    XOAUTH2 = "xoauth2"


DEFAULT_PORTS = {Security.IMAPS: 993, Security.STARTTLS: 143, Security.NONE: 143}
_HEX = re.compile(r"[0-9a-fA-F]{64}")


def normalize_fingerprint(text: str) -> str:
    """``AB:CD:...`` upper case from any spelling (colons, spaces or none, any case)."""
    digits = re.sub(r"[\s:]", "", text)
    if not _HEX.fullmatch(digits):
        raise ConfigError(
            f"The pinned certificate fingerprint {text!r} is not a SHA-256 fingerprint.",
            hint="Paste the 64 hexadecimal digits (colons optional) shown in the certificate "
            "error message.",
        )
    digits = digits.upper()
    return ":".join(digits[i : i + 2] for i in range(0, 64, 2))


@dataclass(frozen=True)
class AccountSettings:
    """One IMAP account. ``key`` names it in the database and in the keyring."""

    host: str = ""
    user: str = ""
    port: int = 0  # 0: the default port of ``security``
    security: Security = Security.IMAPS
    auth: AuthMethod = AuthMethod.PASSWORD
    ca_file: str = ""  # extra trusted CA certificates (PEM), for private CAs
    pin_sha256: str = ""  # the server certificate's SHA-256, trusted even if it does not verify
    timeout: float = 30.0
    #: A command whose first line of output is the password (or, with XOAUTH2, the access
    #: token): isync's PassCmd, msmtp's passwordeval. Empty: the keyring, else ask.
    password_command: str = ""
    #: The name to log in with where it differs from ``user``: ``xtmail serve`` logging in to
    #: an account a user offered it as an IMAP master user (Dovecot: ``alice*master``). The
    #: account stays ``user@host`` (its key, its lock, its locations). Never saved.
    login: str = ""

    @property
    def key(self) -> str:
        """``user@host``: the account's name in ``xtmail.location`` and in the keyring."""
        return f"{self.user}@{self.host}"

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.security]

    def problems(self) -> list[str]:
        """What is wrong, each phrased as what to fix; empty when the settings are usable."""
        found = []
        if not self.host.strip():
            found.append("Enter the IMAP server's host name (for example imap.example.com).")
        elif any(c.isspace() for c in self.host) or "/" in self.host:
            found.append(f"The host name {self.host!r} must not contain spaces or slashes.")
        if not self.user.strip():
            found.append("Enter the user name you log in to the IMAP server with.")
        if not 0 <= self.port <= 65535:
            found.append(f"The port {self.port} must be between 1 and 65535 (0 = default).")
        if self.ca_file and not Path(self.ca_file).is_file():
            found.append(f"The CA certificate file {self.ca_file} does not exist.")
        if self.pin_sha256:
            try:
                normalize_fingerprint(self.pin_sha256)
            except ConfigError as exc:
                found.append(exc.user_text().replace("\n", " "))
        if self.timeout <= 0:
            found.append("The network timeout must be a positive number of seconds.")
        return found

    def validate(self) -> AccountSettings:
        """Return ``self`` with a normalised fingerprint, or raise :class:`ConfigError`."""
        problems = self.problems()
        if problems:
            raise ConfigError(
                "The email account settings are incomplete: " + " ".join(problems),
                hint="Fix them in the account settings (User Preferences, Email), or on the "
                "command line.",
            )
        if self.pin_sha256:
            return replace(self, pin_sha256=normalize_fingerprint(self.pin_sha256))
        return self


@dataclass(frozen=True)
class SyncSettings:
    """What to synchronize and how, besides the account itself."""

    account: AccountSettings = field(default_factory=AccountSettings)
    folders: tuple[str, ...] = ("INBOX",)
    sync_while_running: bool = False
    since: date | None = None  # a folder's first sync imports only mail since this day
    poll_interval: float = 180.0  # seconds between passes where the server lacks IDLE
    batch_size: int = 250
    own_addresses: tuple[str, ...] = ()
    excluded_domains: tuple[str, ...] = ()
    exclude_automated: bool = True
    exclude_bulk: bool = True
    create_contacts: bool = True
    contact_scope: str = "correspondents"  # ImportPolicy.contact_scope
    max_recipients: int = 10  # ImportPolicy.max_recipients (0: no limit)

    def policy(self) -> ImportPolicy:
        # The login is usually the user's own address; it must never become a contact.
        own = (*self.own_addresses, self.account.user) if "@" in self.account.user else (
            self.own_addresses)
        return ImportPolicy.build(
            own_addresses=own,
            excluded_domains=self.excluded_domains,
            exclude_automated=self.exclude_automated,
            exclude_bulk=self.exclude_bulk,
            create_contacts=self.create_contacts,
            contact_scope=self.contact_scope,
            max_recipients=self.max_recipients,
        )

    def validate(self) -> SyncSettings:
        account = self.account.validate()
        problems = []
        if self.poll_interval < 5:
            problems.append("The polling interval must be at least 5 seconds.")
        if not 1 <= self.batch_size <= 5000:
            problems.append("The batch size must be between 1 and 5000 messages.")
        if problems:
            raise ConfigError(" ".join(problems))
        return replace(self, account=account)


# -- what to tell people -------------------------------------------------------------------


def describe_error(exc: XtmailError, account: AccountSettings | None = None) -> str:
    """``exc.user_text()`` worded for people where the cause is a network error of
    ``account``'s connection (no "[Errno -2] Name or service not known": the host name is
    wrong), and without doubled periods."""
    cause: BaseException | None = exc.__cause__
    if account is not None:
        where = f"{account.host}:{account.effective_port}"
        while cause is not None:
            if isinstance(cause, socket.gaierror):
                return f"{account.host}: no such host; check the server name."
            if isinstance(cause, ConnectionRefusedError):
                return (f"{where}: the server refused the connection; check the port and the "
                        "security setting.")
            if isinstance(cause, TimeoutError):
                return (f"{where}: no answer within {account.timeout:g} seconds; check the "
                        "server name, the port and your network.")
            if isinstance(cause, ssl.SSLError) and not isinstance(
                    cause, ssl.SSLCertVerificationError):
                return (f"{where}: the secure connection could not be set up; check the "
                        "security setting (SSL/TLS usually on port 993, STARTTLS on 143).")
            cause = cause.__cause__
    return tidy_text(exc.user_text())


#: Operating-system network errors as the socket library words them, and as people would.
_OS_WORDING = (
    (re.compile(r"\[Errno -?\d+\] (Name or service not known|Temporary failure in name "
                r"resolution|No address associated with hostname|nodename nor servname "
                r"provided, or not known)|\[Errno 11001\] getaddrinfo failed"),
     "no such host (check the server name)"),
    (re.compile(r"\[Errno \d+\] Connection refused|\[WinError 10061\][^.;]*"),
     "the server refused the connection (check the port and the security setting)"),
    (re.compile(r"\[(?:Errno|WinError) -?\d+\] "), ""),
)


def tidy_text(text: str) -> str:
    """A message for people: operating-system error numbers worded, doubled periods (a
    quoted reason that ends with one, followed by our own) made single."""
    for pattern, wording in _OS_WORDING:
        text = pattern.sub(wording, text)
    return re.sub(r"(?<!\.)\.\.(?!\.)", ".", text)


# -- several accounts --------------------------------------------------------------------------


@dataclass(frozen=True)
class MailAccount:
    """One account of the user with its own folders; ``enabled`` False keeps it configured
    but not synchronized. ``delimiter`` is the server's folder hierarchy separator, kept so
    that the saved folders are shown as a tree before the server is asked again.
    ``offered``: the user let the company's mail server (``xtmail serve``) synchronize it
    (docs/serve.md, "Accounts users offer"); the offer itself is a row in the database."""

    account: AccountSettings = field(default_factory=AccountSettings)
    folders: tuple[str, ...] = ("INBOX",)
    enabled: bool = True
    delimiter: str = ""
    offered: bool = False


@dataclass(frozen=True)
class EmailSettings:
    """Everything the Email page of User Preferences edits: the user's accounts, and the
    options they share (``options``; its own ``account`` and ``folders`` are not used)."""

    accounts: tuple[MailAccount, ...] = ()
    options: SyncSettings = field(default_factory=SyncSettings)

    @property
    def sync_while_running(self) -> bool:
        return self.options.sync_while_running

    def own_addresses(self) -> tuple[str, ...]:
        """The configured addresses, then every account's login that is an address."""
        found: dict[str, str] = {}
        logins = (m.account.user.strip() for m in self.accounts)
        for address in (*self.options.own_addresses, *logins):
            if _looks_like_address(address):
                found.setdefault(address.lower(), address)
        return tuple(found.values())

    def sync_settings(self, entry: MailAccount) -> SyncSettings:
        """What :class:`SyncService` and ``AccountSync`` take for one account: the shared
        options, the account, its folders, and all of the user's own addresses."""
        return replace(self.options, account=entry.account, folders=entry.folders,
                       own_addresses=self.own_addresses())

    def enabled(self) -> tuple[SyncSettings, ...]:
        """One :class:`SyncSettings` per enabled account with a server."""
        return tuple(self.sync_settings(m) for m in self.accounts
                     if m.enabled and m.account.host.strip())

    def problems(self) -> list[str]:
        """What stops these settings from being saved, phrased as what to fix."""
        found: list[str] = []
        keys: set[str] = set()
        for entry in self.accounts:
            account = entry.account
            if not account.host.strip() and not account.user.strip():
                continue  # an empty account is dropped on save
            name = account.key if account.host.strip() and account.user.strip() else ""
            for problem in account.problems():
                found.append(f"{name}: {problem}" if name else problem)
            if name and name.lower() in keys:
                found.append(f"The account {name} is configured twice.")
            keys.add(name.lower())
        if self.sync_while_running and not any(m.account.host.strip() for m in self.accounts):
            found.append("To synchronize email while the application runs, enter an account "
                         "first: the IMAP server and the user name.")
        return found

    def validate(self) -> EmailSettings:
        """Return the settings with empty accounts dropped and fingerprints normalised, or
        raise :class:`ConfigError` saying what to fix."""
        problems = self.problems()
        if problems:
            raise ConfigError(" ".join(problems))
        kept = tuple(replace(m, account=m.account.validate()) for m in self.accounts
                     if m.account.host.strip() or m.account.user.strip())
        return replace(self, accounts=kept)


def _looks_like_address(text: str) -> bool:
    local, at, domain = text.strip().rpartition("@")
    return bool(at and local and "." in domain and not any(c.isspace() for c in text.strip()))


# -- QSettings persistence -------------------------------------------------------------------
#
# Group ``xtmail/email``: the shared options as plain keys, the accounts as a QSettings array
# ``accounts`` (host, user, ..., folders, enabled). The first account is also written to the
# plain keys of the single-account format that came before, which is still read when no
# array is there: settings move both ways between versions.

_GROUP = "xtmail/email"
_ARRAY = "accounts"


def _split(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value] if value else []
    if not isinstance(value, list | tuple):
        return ()
    return tuple(str(v).strip() for v in value if str(v).strip())


def _bool(value: object, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):  # INI files give back strings
        return value.lower() in {"true", "1", "yes"}
    return bool(value)


def _text(store: QSettings, name: str, default: str = "") -> str:
    value = store.value(name, default)
    return str(value) if value is not None else default


def _number(store: QSettings, name: str, default: float) -> float:
    try:
        return float(_text(store, name, str(default)) or default)
    except ValueError:
        return default


def _read_account(store: QSettings) -> MailAccount:
    """The account at the store's current group or array index."""
    try:
        security = Security(_text(store, "security", Security.IMAPS.value))
    except ValueError:
        security = Security.IMAPS
    try:
        auth = AuthMethod(_text(store, "auth", AuthMethod.PASSWORD.value))
    except ValueError:
        auth = AuthMethod.PASSWORD
    port = int(_number(store, "port", 0))
    account = AccountSettings(
        host=_text(store, "host"),
        user=_text(store, "user"),
        port=port if 0 <= port <= 65535 else 0,
        security=security,
        auth=auth,
        ca_file=_text(store, "ca_file"),
        pin_sha256=_text(store, "pin_sha256"),
        timeout=_number(store, "timeout", AccountSettings.timeout),
        password_command=_text(store, "password_command"),
    )
    folders = store.value("folders")
    return MailAccount(
        account=account,
        folders=_split(folders) if folders is not None else MailAccount.folders,
        enabled=_bool(store.value("enabled"), True),
        delimiter=_text(store, "delimiter"),
        offered=_bool(store.value("offered_to_server"), False),
    )


def _write_account(store: QSettings, entry: MailAccount) -> None:
    account = entry.account
    store.setValue("host", account.host)
    store.setValue("user", account.user)
    store.setValue("port", account.port)
    store.setValue("security", account.security.value)
    store.setValue("auth", account.auth.value)
    store.setValue("ca_file", account.ca_file)
    store.setValue("pin_sha256", account.pin_sha256)
    store.setValue("timeout", account.timeout)
    store.setValue("password_command", account.password_command)
    store.setValue("folders", list(entry.folders))
    store.setValue("enabled", entry.enabled)
    store.setValue("delimiter", entry.delimiter)
    store.setValue("offered_to_server", entry.offered)


def load_email_settings(store: QSettings) -> EmailSettings:
    """Read what :func:`save_email_settings` wrote (or the older single-account format);
    defaults for what is missing or unreadable."""
    defaults = SyncSettings()
    store.beginGroup(_GROUP)
    try:
        since_text = _text(store, "since")
        try:
            since = date.fromisoformat(since_text) if since_text else None
        except ValueError:
            since = None
        options = SyncSettings(
            sync_while_running=_bool(store.value("sync_while_running"), False),
            since=since,
            poll_interval=_number(store, "poll_interval", defaults.poll_interval),
            batch_size=int(_number(store, "batch_size", defaults.batch_size)),
            own_addresses=_split(store.value("own_addresses")),
            excluded_domains=_split(store.value("excluded_domains")),
            exclude_automated=_bool(store.value("exclude_automated"), True),
            exclude_bulk=_bool(store.value("exclude_bulk"), True),
            create_contacts=_bool(store.value("create_contacts"), True),
            contact_scope=(scope if (scope := _text(store, "contact_scope")) in CONTACT_SCOPES
                           else defaults.contact_scope),
            max_recipients=max(0, int(_number(store, "max_recipients",
                                              defaults.max_recipients))),
        )
        count = store.beginReadArray(_ARRAY)
        try:
            accounts = []
            for index in range(count):
                store.setArrayIndex(index)
                accounts.append(_read_account(store))
        finally:
            store.endArray()
        if not count and (_text(store, "host") or _text(store, "user")):
            accounts = [_read_account(store)]  # the single-account format
        elif not count:
            # No account yet: keep what an earlier page saved of it (folders, say).
            legacy = _read_account(store)
            if legacy != MailAccount(account=legacy.account) or store.contains("folders"):
                accounts = [legacy]
        return EmailSettings(accounts=tuple(accounts), options=options)
    finally:
        store.endGroup()


def save_email_settings(store: QSettings, settings: EmailSettings) -> None:
    """Write everything but passwords (which only the keyring holds)."""
    options = settings.options
    store.beginGroup(_GROUP)
    try:
        store.setValue("sync_while_running", options.sync_while_running)
        store.setValue("since", options.since.isoformat() if options.since else "")
        store.setValue("poll_interval", options.poll_interval)
        store.setValue("batch_size", options.batch_size)
        store.setValue("own_addresses", list(options.own_addresses))
        store.setValue("excluded_domains", list(options.excluded_domains))
        store.setValue("exclude_automated", options.exclude_automated)
        store.setValue("exclude_bulk", options.exclude_bulk)
        store.setValue("create_contacts", options.create_contacts)
        store.setValue("contact_scope", options.contact_scope)
        store.setValue("max_recipients", options.max_recipients)
        store.remove(_ARRAY)
        store.beginWriteArray(_ARRAY, len(settings.accounts))
        try:
            for index, entry in enumerate(settings.accounts):
                store.setArrayIndex(index)
                _write_account(store, entry)
        finally:
            store.endArray()
        _write_account(store, settings.accounts[0] if settings.accounts else MailAccount())
    finally:
        store.endGroup()
    store.sync()


def load_settings(store: QSettings) -> SyncSettings:
    """The first account's settings (the single-account view, as ``xtmail sync`` uses it);
    defaults for what is missing."""
    email = load_email_settings(store)
    if not email.accounts:
        return email.options
    first = email.accounts[0]
    return replace(email.options, account=first.account, folders=first.folders)


def save_settings(store: QSettings, settings: SyncSettings) -> None:
    """Write ``settings`` as the first account and the shared options; other saved accounts
    are kept (the one with the same ``user@host`` is replaced)."""
    email = load_email_settings(store)
    entry = MailAccount(account=settings.account, folders=settings.folders)
    others = [m for m in email.accounts if m.account.key != settings.account.key]
    if email.accounts and email.accounts[0].account.key == settings.account.key:
        entry = replace(email.accounts[0], account=settings.account, folders=settings.folders)
    options = replace(settings, account=AccountSettings(), folders=SyncSettings.folders)
    save_email_settings(store, EmailSettings(accounts=(entry, *others), options=options))
