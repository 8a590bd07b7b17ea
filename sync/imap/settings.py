"""Account and folder settings: plain dataclasses, validation, QSettings persistence.

The dataclasses import nothing from Qt so that the headless engine and the CLI use them
too; only :func:`load_settings` and :func:`save_settings` touch Qt, and they import it when
called. Passwords are never part of these settings: they live in the keyring
(:mod:`xtmail.sync.imap.credentials`).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from xtmail.sync.errors import ConfigError
from xtmail.sync.values import ImportPolicy

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
                hint="Fix them on the Email page of User Preferences (or the command line).",
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


# -- QSettings persistence -------------------------------------------------------------------

_GROUP = "xtmail/email"


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


def load_settings(store: QSettings) -> SyncSettings:
    """Read the settings written by :func:`save_settings`; defaults for what is missing."""
    defaults = SyncSettings()
    store.beginGroup(_GROUP)
    try:
        def text(name: str, default: str = "") -> str:
            value = store.value(name, default)
            return str(value) if value is not None else default

        try:
            security = Security(text("security", Security.IMAPS.value))
        except ValueError:
            security = Security.IMAPS
        try:
            auth = AuthMethod(text("auth", AuthMethod.PASSWORD.value))
        except ValueError:
            auth = AuthMethod.PASSWORD
        try:
            port = int(text("port", "0") or 0)
        except ValueError:
            port = 0
        since_text = text("since")
        try:
            since = date.fromisoformat(since_text) if since_text else None
        except ValueError:
            since = None
        try:
            poll = float(text("poll_interval", str(defaults.poll_interval)))
        except ValueError:
            poll = defaults.poll_interval
        try:
            batch_size = int(text("batch_size", str(defaults.batch_size)))
        except ValueError:
            batch_size = defaults.batch_size
        try:
            timeout = float(text("timeout", str(defaults.account.timeout)))
        except ValueError:
            timeout = defaults.account.timeout
        account = AccountSettings(
            host=text("host"),
            user=text("user"),
            port=port,
            security=security,
            auth=auth,
            ca_file=text("ca_file"),
            pin_sha256=text("pin_sha256"),
            timeout=timeout,
        )
        folders = store.value("folders")
        return SyncSettings(
            account=account,
            folders=_split(folders) if folders is not None else defaults.folders,
            sync_while_running=_bool(store.value("sync_while_running"), False),
            since=since,
            poll_interval=poll,
            batch_size=batch_size,
            own_addresses=_split(store.value("own_addresses")),
            excluded_domains=_split(store.value("excluded_domains")),
            exclude_automated=_bool(store.value("exclude_automated"), True),
            exclude_bulk=_bool(store.value("exclude_bulk"), True),
            create_contacts=_bool(store.value("create_contacts"), True),
        )
    finally:
        store.endGroup()


def save_settings(store: QSettings, settings: SyncSettings) -> None:
    """Write everything but the password (which only the keyring holds)."""
    account = settings.account
    store.beginGroup(_GROUP)
    try:
        store.setValue("host", account.host)
        store.setValue("user", account.user)
        store.setValue("port", account.port)
        store.setValue("security", account.security.value)
        store.setValue("auth", account.auth.value)
        store.setValue("ca_file", account.ca_file)
        store.setValue("pin_sha256", account.pin_sha256)
        store.setValue("timeout", account.timeout)
        store.setValue("folders", list(settings.folders))
        store.setValue("sync_while_running", settings.sync_while_running)
        store.setValue("since", settings.since.isoformat() if settings.since else "")
        store.setValue("poll_interval", settings.poll_interval)
        store.setValue("batch_size", settings.batch_size)
        store.setValue("own_addresses", list(settings.own_addresses))
        store.setValue("excluded_domains", list(settings.excluded_domains))
        store.setValue("exclude_automated", settings.exclude_automated)
        store.setValue("exclude_bulk", settings.exclude_bulk)
        store.setValue("create_contacts", settings.create_contacts)
    finally:
        store.endGroup()
    store.sync()
