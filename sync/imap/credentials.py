"""Where login secrets come from, in this order: the account's password command (isync's
PassCmd, msmtp's passwordeval: also the way OAuth2 helpers hand over access tokens), an
XOAUTH2 token provider, a password given for this session only (kept in memory), the OS
keyring. When none has one, the host asks the user once (:meth:`KeyringCredentials.needs_password`,
:meth:`KeyringCredentials.remember`).

Nothing here writes a secret to a file, the database or a log. The keyring entry of an
account is service ``xtmail``, user name ``user@host`` (:attr:`AccountSettings.key`).
"""

from __future__ import annotations

import getpass
import subprocess
import sys
import threading
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


#: Seconds a password or token command may take before it is given up.
COMMAND_TIMEOUT = 30.0


class PasswordCommandError(ConfigError):
    """The account's password (or token) command failed, timed out or printed nothing."""

    hint = ("Check the password command in the account settings; run it in a terminal to "
            "see what it does.")


def run_secret_command(command: str, timeout: float = COMMAND_TIMEOUT) -> str:
    """Run ``command`` through the shell and return the first line it prints: the password or
    access token. The output is never logged nor put in an error message."""
    try:
        # The user's own configured command, run as PassCmd and passwordeval run theirs:
        # through the shell, so that pipes and quoting work as typed.
        done = subprocess.run(  # noqa: S602
            command, shell=True, stdin=subprocess.DEVNULL, capture_output=True,
            timeout=timeout, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PasswordCommandError(
            f"The password command `{command}` gave no answer within {timeout:g} seconds."
        ) from exc
    except OSError as exc:
        raise PasswordCommandError(
            f"The password command `{command}` could not be started: {exc.strerror or exc}."
        ) from exc
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        detail = f": {said[-1].strip()}" if said else ""
        raise PasswordCommandError(
            f"The password command `{command}` failed (exit status {done.returncode}){detail}"
            .rstrip(".") + "."
        )
    lines = done.stdout.decode(errors="replace").splitlines()
    secret = lines[0] if lines else ""
    if not secret:
        raise PasswordCommandError(f"The password command `{command}` printed nothing.")
    return secret


class SessionPasswords:
    """Passwords given for this session only: in memory, gone when the process ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._passwords: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._passwords.get(key)

    def set(self, key: str, password: str) -> None:
        with self._lock:
            if password:
                self._passwords[key] = password
            else:
                self._passwords.pop(key, None)

    def __repr__(self) -> str:
        return f"SessionPasswords({len(self._passwords)} account(s), <hidden>)"


class KeyringCredentials:
    """Secrets for an account, from (in this order) its password command, ``token_provider``
    for XOAUTH2, the passwords given for this session, the OS keyring.

    A keyring that is missing or locked is not fatal when a session password or a command
    is there; :meth:`needs_password` tells a host when to ask the user.
    """

    def __init__(
        self, service: str = KEYRING_SERVICE, token_provider: TokenProvider | None = None,
        *, session: SessionPasswords | None = None, command_timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        self.service = service
        self.token_provider = token_provider
        self.session = session or SessionPasswords()
        self.command_timeout = command_timeout

    def credential(self, account: AccountSettings) -> Credential:
        if account.password_command.strip():
            return Credential(account.auth, run_secret_command(account.password_command,
                                                               self.command_timeout))
        if account.auth is AuthMethod.XOAUTH2:
            if self.token_provider is None:
                raise ConfigError(
                    f"The account {account.key} uses OAuth2 but no token provider is set up.",
                    hint="Choose password login, or set a token command for the account "
                    "(a program that prints an access token).",
                )
            return Credential(AuthMethod.XOAUTH2, self.token_provider(account))
        remembered = self.session.get(account.key)
        if remembered:
            return Credential(AuthMethod.PASSWORD, remembered)
        password = self.password(account)
        if not password:
            raise ConfigError(
                f"No password is stored for {account.key}.",
                hint="Enter the password on the Email page of User Preferences "
                f"(or: keyring set {self.service} {account.key}).",
            )
        return Credential(AuthMethod.PASSWORD, password)

    def needs_password(self, account: AccountSettings) -> bool:
        """True when logging in to ``account`` would fail for want of a password: no
        command, no token provider, none given this session, none in a usable keyring."""
        if account.password_command.strip():
            return False
        if account.auth is AuthMethod.XOAUTH2:
            return False  # a token comes from a provider or command, never from the user
        if self.session.get(account.key):
            return False
        try:
            return not self.password(account)
        except KeyringUnavailable:
            return True

    def remember(self, account: AccountSettings, password: str) -> None:
        """Keep ``password`` for this session only (in memory)."""
        self.session.set(account.key, password)

    def keyring_usable(self) -> bool:
        """Whether an OS keyring can hold passwords here (not the fail backend)."""
        import keyring
        import keyring.backends.fail

        backend = keyring.get_keyring()
        return not isinstance(backend, keyring.backends.fail.Keyring)

    def store_password(self, account: AccountSettings, password: str) -> bool:
        """Keep ``password``: in the keyring where one is usable (True), else for this
        session only (False). The session copy is kept in both cases."""
        self.remember(account, password)
        if not self.keyring_usable():
            return False
        try:
            self.set_password(account, password)
        except KeyringUnavailable:
            return False
        return True

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


class CommandCredentials:
    """The secret printed by one command, run for every login (tokens expire): what
    ``xtmail sync --password-command`` and ``--token-command`` use."""

    def __init__(self, command: str, method: AuthMethod = AuthMethod.PASSWORD,
                 timeout: float = COMMAND_TIMEOUT) -> None:
        self.command = command
        self.method = method
        self.timeout = timeout

    def credential(self, account: AccountSettings) -> Credential:
        return Credential(self.method, run_secret_command(self.command, self.timeout))


class PromptCredentials:
    """For a terminal: the keyring's password when there is one, else asked once (without
    echo) and kept in memory for the rest of the process: ``xtmail sync --ask-password``."""

    def __init__(self, ask: Callable[[str], str] = getpass.getpass,
                 keyring_credentials: KeyringCredentials | None = None) -> None:
        self._ask = ask
        self._keyring = keyring_credentials or KeyringCredentials()
        self._lock = threading.Lock()

    def credential(self, account: AccountSettings) -> Credential:
        with self._lock:  # several accounts' threads: one question at a time
            if self._keyring.needs_password(account):
                password = self._ask(f"Password for {account.key}: ")
                if not password:
                    raise ConfigError(f"No password was given for {account.key}.")
                self._keyring.remember(account, password)
        return self._keyring.credential(account)


def cli_credentials(
    *, password_command: str | None = None, token_command: str | None = None,
    ask_password: bool = False,
) -> CredentialProvider:
    """The provider for ``xtmail sync``'s sign-in options (None: the caller's default)."""
    if token_command:
        return CommandCredentials(token_command, AuthMethod.XOAUTH2)
    if password_command:
        return CommandCredentials(password_command, AuthMethod.PASSWORD)
    if ask_password:
        return PromptCredentials(_ask_on_terminal)
    return KeyringCredentials()


def _ask_on_terminal(prompt: str) -> str:
    if not sys.stdin.isatty():
        raise ConfigError("--ask-password needs a terminal to ask on.",
                          hint="Use --password-command or --password-env in scripts.")
    return getpass.getpass(prompt)


class StaticCredentials:
    """A fixed secret, for example from an environment variable in a cron job."""

    def __init__(self, credential: Credential) -> None:
        self._credential = credential

    def credential(self, account: AccountSettings) -> Credential:
        return self._credential


class KeyringUnavailable(ConfigError):
    """The OS keyring is missing or locked."""

    hint = ("Unlock or install a system keyring (Secret Service, KWallet, Windows, macOS), or "
            "set a password command for the account.")


__all__ = [
    "COMMAND_TIMEOUT",
    "KEYRING_SERVICE",
    "CommandCredentials",
    "Credential",
    "CredentialProvider",
    "KeyringCredentials",
    "KeyringUnavailable",
    "PasswordCommandError",
    "PromptCredentials",
    "SessionPasswords",
    "StaticCredentials",
    "TokenProvider",
    "cli_credentials",
    "run_secret_command",
]
