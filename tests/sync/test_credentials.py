"""Login secrets: passwords in the keyring, OAuth2 tokens from a provider, fixed secrets."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import keyring
import keyring.backend
import keyring.backends.fail
import keyring.errors
import pytest

from tests.helpers.qt import MemoryKeyring
from xtmail.sync.errors import ConfigError
from xtmail.sync.imap.credentials import (
    KEYRING_SERVICE,
    CommandCredentials,
    Credential,
    KeyringCredentials,
    KeyringUnavailable,
    PasswordCommandError,
    PromptCredentials,
    StaticCredentials,
    cli_credentials,
    run_secret_command,
)
from xtmail.sync.imap.settings import AccountSettings, AuthMethod

ACCOUNT = AccountSettings(host="imap.example.com", user="ada@example.com")
OAUTH = AccountSettings(host="imap.example.com", user="ada@example.com",
                        auth=AuthMethod.XOAUTH2)


class LockedKeyring(keyring.backend.KeyringBackend):
    """A keyring that is there but refuses every request, as a locked one does."""

    priority = 1  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        raise keyring.errors.KeyringLocked("the keyring is locked")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise keyring.errors.PasswordSetError("the keyring is locked")

    def delete_password(self, service: str, username: str) -> None:
        raise keyring.errors.PasswordDeleteError("the keyring is locked")


@contextmanager
def installed(backend: keyring.backend.KeyringBackend) -> Iterator[None]:
    previous = keyring.get_keyring()
    keyring.set_keyring(backend)
    try:
        yield
    finally:
        keyring.set_keyring(previous)


def test_a_stored_password_logs_in(memory_keyring: MemoryKeyring) -> None:
    credentials = KeyringCredentials()
    credentials.set_password(ACCOUNT, "s3cret")
    # Service "xtmail", user name user@host: what the hint tells people to set by hand.
    assert memory_keyring.secrets == {(KEYRING_SERVICE, "ada@example.com@imap.example.com"):
                                      "s3cret"}
    assert credentials.password(ACCOUNT) == "s3cret"
    assert credentials.credential(ACCOUNT) == Credential(AuthMethod.PASSWORD, "s3cret")


def test_an_empty_password_removes_the_stored_one(memory_keyring: MemoryKeyring) -> None:
    credentials = KeyringCredentials()
    credentials.set_password(ACCOUNT, "s3cret")
    credentials.set_password(ACCOUNT, "")
    assert memory_keyring.secrets == {}
    credentials.set_password(ACCOUNT, "")  # nothing stored: nothing to do
    assert credentials.password(ACCOUNT) is None


def test_without_a_password_the_error_says_where_to_enter_it(
    memory_keyring: MemoryKeyring,
) -> None:
    with pytest.raises(ConfigError) as caught:
        KeyringCredentials().credential(ACCOUNT)
    text = caught.value.user_text()
    assert "No password is stored for ada@example.com@imap.example.com" in text
    assert "Email page of User Preferences" in text
    assert "keyring set xtmail ada@example.com@imap.example.com" in text


def test_each_service_name_is_its_own_keyring_entry(memory_keyring: MemoryKeyring) -> None:
    KeyringCredentials(service="other-app").set_password(ACCOUNT, "theirs")
    assert KeyringCredentials().password(ACCOUNT) is None
    assert KeyringCredentials(service="other-app").credential(ACCOUNT).secret == "theirs"


def test_oauth2_asks_the_provider_for_a_fresh_token_each_time(
    memory_keyring: MemoryKeyring,
) -> None:
    asked: list[AccountSettings] = []

    def tokens(account: AccountSettings) -> str:
        asked.append(account)
        return f"token-{len(asked)}"

    credentials = KeyringCredentials(token_provider=tokens)
    assert credentials.credential(OAUTH) == Credential(AuthMethod.XOAUTH2, "token-1")
    assert credentials.credential(OAUTH) == Credential(AuthMethod.XOAUTH2, "token-2")
    assert asked == [OAUTH, OAUTH]
    # The keyring is not consulted (nor filled) for OAuth2 accounts.
    assert memory_keyring.secrets == {}


def test_oauth2_without_a_provider_says_what_to_choose(memory_keyring: MemoryKeyring) -> None:
    memory_keyring.set_password(KEYRING_SERVICE, OAUTH.key, "a password is no token")
    with pytest.raises(ConfigError) as caught:
        KeyringCredentials().credential(OAUTH)
    assert "uses OAuth2 but no token provider" in str(caught.value)
    assert "Choose password login" in caught.value.user_text()


def test_no_keyring_at_all_is_a_setting_to_fix() -> None:
    # What a server or container without a desktop session has.
    with installed(keyring.backends.fail.Keyring()), pytest.raises(KeyringUnavailable) as caught:
        KeyringCredentials().credential(ACCOUNT)
    assert isinstance(caught.value, ConfigError)
    text = caught.value.user_text()
    assert text.startswith("The system keyring could not be read:")
    assert "Unlock or install a system keyring" in text


def test_a_locked_keyring_is_reported_when_reading_and_saving() -> None:
    credentials = KeyringCredentials()
    with installed(LockedKeyring()):
        with pytest.raises(KeyringUnavailable, match="could not be read: the keyring is locked"):
            credentials.password(ACCOUNT)
        with pytest.raises(KeyringUnavailable, match="could not be saved: the keyring is locked"):
            credentials.set_password(ACCOUNT, "s3cret")


def test_static_credentials_give_the_same_secret_for_any_account() -> None:
    secret = Credential(AuthMethod.PASSWORD, "from-the-environment")
    static = StaticCredentials(secret)
    assert static.credential(ACCOUNT) is secret
    assert static.credential(OAUTH) is secret


def test_a_credential_never_shows_its_secret() -> None:
    credential = Credential(AuthMethod.XOAUTH2, "ya29.very-secret")
    for shown in (repr(credential), str(credential), f"{credential}", repr([credential])):
        assert "very-secret" not in shown
    assert repr(credential) == "Credential(xoauth2, <hidden>)"


# -- password commands (isync's PassCmd, msmtp's passwordeval) and the session's passwords


def script(tmp_path: Path, body: str, name: str = "secret.sh") -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o700)
    return str(path)


def test_a_password_command_gives_its_first_line(tmp_path: Path) -> None:
    command = script(tmp_path, 'printf "pass word 1\\nsecond line\\n"')
    account = replace(ACCOUNT, password_command=command)
    with installed(keyring.backends.fail.Keyring()):
        assert KeyringCredentials().credential(account) == Credential(
            AuthMethod.PASSWORD, "pass word 1")
        assert not KeyringCredentials().needs_password(account)
    # The shell runs it, so pipes work as typed.
    piped = replace(ACCOUNT, password_command="echo piped-secret | tr a-z A-Z")
    assert run_secret_command(piped.password_command) == "PIPED-SECRET"


def test_a_token_command_serves_oauth2(tmp_path: Path) -> None:
    command = script(tmp_path, "echo ya29.fresh-token")
    account = replace(OAUTH, password_command=command)
    assert KeyringCredentials().credential(account) == Credential(AuthMethod.XOAUTH2,
                                                                  "ya29.fresh-token")
    assert CommandCredentials(command, AuthMethod.XOAUTH2).credential(ACCOUNT) == Credential(
        AuthMethod.XOAUTH2, "ya29.fresh-token")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("echo 'gpg: decryption failed: No secret key' >&2; exit 2",
         "failed (exit status 2): gpg: decryption failed: No secret key."),
        ("exit 1", "failed (exit status 1)."),
        ("true", "printed nothing."),
        ("sleep 5", "gave no answer within 0.5 seconds."),
    ],
    ids=["fails", "fails-silently", "prints-nothing", "hangs"],
)
def test_a_failing_password_command_names_the_command(
    tmp_path: Path, body: str, says: str
) -> None:
    command = script(tmp_path, body)
    account = replace(ACCOUNT, password_command=command)
    with pytest.raises(PasswordCommandError) as caught:
        KeyringCredentials(command_timeout=0.5).credential(account)
    text = caught.value.user_text()
    assert text.startswith(f"The password command `{command}` ")
    assert says in text
    assert ".." not in text
    assert "run it in a terminal" in text
    assert caught.value.kind == "config"  # the account stops until the command is fixed


def test_a_missing_command_says_so(tmp_path: Path) -> None:
    with pytest.raises(PasswordCommandError) as caught:
        run_secret_command(str(tmp_path / "no-such-helper"))
    assert "failed (exit status 127)" in str(caught.value)
    assert "not found" in str(caught.value)


def test_without_a_keyring_a_session_password_logs_in_and_stays_in_memory() -> None:
    credentials = KeyringCredentials()
    with installed(keyring.backends.fail.Keyring()):
        assert not credentials.keyring_usable()
        assert credentials.needs_password(ACCOUNT)
        assert credentials.store_password(ACCOUNT, "typed-once") is False
        assert not credentials.needs_password(ACCOUNT)
        assert credentials.credential(ACCOUNT) == Credential(AuthMethod.PASSWORD, "typed-once")
        assert "typed-once" not in repr(credentials.session)
    # Another session (a new provider) has to ask again.
    with installed(keyring.backends.fail.Keyring()):
        assert KeyringCredentials().needs_password(ACCOUNT)


def test_with_a_keyring_the_password_is_stored_there(memory_keyring: MemoryKeyring) -> None:
    assert KeyringCredentials().needs_password(ACCOUNT)
    assert KeyringCredentials().store_password(ACCOUNT, "kept") is True
    assert memory_keyring.secrets == {(KEYRING_SERVICE, ACCOUNT.key): "kept"}
    assert not KeyringCredentials().needs_password(ACCOUNT)


def test_the_terminal_prompt_asks_once_per_process() -> None:
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return "from-the-terminal"

    with installed(keyring.backends.fail.Keyring()):
        prompt = PromptCredentials(ask)
        assert prompt.credential(ACCOUNT).secret == "from-the-terminal"
        assert prompt.credential(ACCOUNT).secret == "from-the-terminal"
    assert asked == [f"Password for {ACCOUNT.key}: "]


def test_the_cli_options_choose_the_provider(tmp_path: Path) -> None:
    command = script(tmp_path, "echo from-command")
    assert cli_credentials(password_command=command).credential(ACCOUNT) == Credential(
        AuthMethod.PASSWORD, "from-command")
    assert cli_credentials(token_command=command).credential(ACCOUNT).method is (
        AuthMethod.XOAUTH2)
    assert isinstance(cli_credentials(ask_password=True), PromptCredentials)
    assert isinstance(cli_credentials(), KeyringCredentials)
