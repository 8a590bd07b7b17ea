"""Where login secrets come from: the OS keyring for passwords, a pluggable XOAUTH2 provider.

Nothing here writes a secret to a file or the database. The keyring entry of an account is
service ``xtmail``, user name ``user@host`` (:attr:`AccountSettings.key`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from xtmail.sync.errors import ConfigError
from xtmail.sync.imap.settings import AccountSettings, AuthMethod

KEYRING_SERVICE = "xtmail"


@dataclass(frozen=True)
class Credential:
    """A secret ready to log in with: a password, or an OAuth2 access token."""

    method: AuthMethod
    secret: str

    def __repr__(self) -> str:  # never print secrets in logs or tracebacks
        return f"Credential({self.method.value}, <hidden>)"


class CredentialProvider(Protocol):
    """Gives the secret for an account when a connection is made (tokens may expire)."""

    def credential(self, account: AccountSettings) -> Credential: ...


#: Returns a fresh OAuth2 access token for an account (an app's own OAuth flow plugs in here).
TokenProvider = Callable[[AccountSettings], str]


class KeyringCredentials:
    """Passwords from the OS keyring; XOAUTH2 tokens from ``token_provider`` when given."""

    def __init__(
        self, service: str = KEYRING_SERVICE, token_provider: TokenProvider | None = None
    ) -> None:
        self.service = service
        self.token_provider = token_provider

    def credential(self, account: AccountSettings) -> Credential:
        if account.auth is AuthMethod.XOAUTH2:
            if self.token_provider is None:
                raise ConfigError(
                    f"The account {account.key} uses OAuth2 but no token provider is set up.",
                    hint="Choose password login, or configure the OAuth2 sign-in.",
                )
            return Credential(AuthMethod.XOAUTH2, self.token_provider(account))
        password = self.password(account)
        if not password:
            raise ConfigError(
                f"No password is stored for {account.key}.",
                hint="Enter the password on the Email page of User Preferences "
                f"(or: keyring set {self.service} {account.key}).",
            )
        return Credential(AuthMethod.PASSWORD, password)

    def password(self, account: AccountSettings) -> str | None:
        import keyring
        import keyring.errors

        try:
            value = keyring.get_password(self.service, account.key)
        except keyring.errors.KeyringError as exc:
            raise KeyringUnavailable(f"The system keyring could not be read: {exc}") from exc
        return value if isinstance(value, str) else None

    def set_password(self, account: AccountSettings, password: str) -> None:
        import keyring
        import keyring.errors

        try:
            if password:
                keyring.set_password(self.service, account.key, password)
            elif self.password(account) is not None:
                keyring.delete_password(self.service, account.key)
        except keyring.errors.KeyringError as exc:
            raise KeyringUnavailable(f"The password could not be saved: {exc}") from exc


class StaticCredentials:
    """A fixed secret, for example from an environment variable in a cron job."""

    def __init__(self, credential: Credential) -> None:
        self._credential = credential

    def credential(self, account: AccountSettings) -> Credential:
        return self._credential


class KeyringUnavailable(ConfigError):
    """The OS keyring is missing or locked."""

    hint = "Unlock or install a system keyring (Secret Service, KWallet, Windows, macOS)."


__all__ = [
    "KEYRING_SERVICE",
    "Credential",
    "CredentialProvider",
    "KeyringCredentials",
    "KeyringUnavailable",
    "StaticCredentials",
    "TokenProvider",
]
