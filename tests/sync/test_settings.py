"""Account and sync settings: what validation refuses and says, and QSettings round trips."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from PyQt6.QtCore import QSettings

from xtmail.sync.errors import ConfigError
from xtmail.sync.imap.settings import (
    AccountSettings,
    AuthMethod,
    EmailSettings,
    MailAccount,
    Security,
    SyncSettings,
    describe_error,
    load_email_settings,
    load_settings,
    normalize_fingerprint,
    save_email_settings,
    save_settings,
    tidy_text,
)

FINGERPRINT = ":".join(f"{i:02X}" for i in range(0xA0, 0xC0))
GOOD = AccountSettings(host="imap.example.com", user="ada@example.com")


@pytest.fixture
def ini(tmp_path: Path) -> Path:
    return tmp_path / "prefs.ini"


def saved_and_loaded(path: Path, settings: SyncSettings) -> SyncSettings:
    """``settings`` written to an INI file and read back through a fresh QSettings."""
    save_settings(QSettings(str(path), QSettings.Format.IniFormat), settings)
    return load_settings(QSettings(str(path), QSettings.Format.IniFormat))


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"host": ""}, "Enter the IMAP server's host name"),
        ({"host": "   "}, "Enter the IMAP server's host name"),
        ({"host": "imap example.com"}, "must not contain spaces or slashes"),
        ({"host": "imap.example.com/mail"}, "must not contain spaces or slashes"),
        ({"user": ""}, "Enter the user name you log in"),
        ({"port": 65536}, "must be between 1 and 65535"),
        ({"port": -1}, "must be between 1 and 65535"),
        ({"ca_file": "/nonexistent/ca.pem"}, "The CA certificate file /nonexistent/ca.pem"),
        ({"pin_sha256": "12:34"}, "Paste the 64 hexadecimal digits"),
        ({"pin_sha256": "g" * 64}, "is not a SHA-256 fingerprint"),
        ({"timeout": 0.0}, "The network timeout must be a positive number"),
    ],
)
def test_a_bad_account_setting_is_refused_saying_what_to_fix(
    change: dict[str, object], says: str
) -> None:
    account = replace(GOOD, **change)  # type: ignore[arg-type]
    problems = account.problems()
    assert len(problems) == 1 and says in problems[0], problems
    with pytest.raises(ConfigError) as caught:
        account.validate()
    text = caught.value.user_text()
    assert says in text
    assert "User Preferences, Email" in text
    # The whole sync refuses to start for the same reason.
    with pytest.raises(ConfigError, match="settings are incomplete"):
        SyncSettings(account=account).validate()


def test_every_problem_is_reported_at_once() -> None:
    problems = AccountSettings(port=99999, timeout=-1).problems()
    assert len(problems) == 4, problems
    with pytest.raises(ConfigError) as caught:
        AccountSettings(port=99999, timeout=-1).validate()
    for problem in problems:
        assert problem in str(caught.value)


def test_unconfigured_settings_do_not_validate() -> None:
    with pytest.raises(ConfigError, match=r"host name.*user name"):
        SyncSettings().validate()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"poll_interval": 4.9}, "at least 5 seconds"),
        ({"batch_size": 0}, "between 1 and 5000"),
        ({"batch_size": 5001}, "between 1 and 5000"),
    ],
)
def test_bad_sync_settings_are_refused(change: dict[str, object], says: str) -> None:
    settings = replace(SyncSettings(account=GOOD), **change)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=says):
        settings.validate()


def test_valid_settings_come_back_with_the_fingerprint_normalised(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    spelled = FINGERPRINT.replace(":", " ").lower()
    settings = SyncSettings(
        account=replace(GOOD, port=0, ca_file=str(ca), pin_sha256=spelled),
        poll_interval=5, batch_size=5000,
    )
    valid = settings.validate()
    assert valid.account.pin_sha256 == FINGERPRINT
    assert valid == replace(settings, account=replace(settings.account, pin_sha256=FINGERPRINT))
    assert GOOD.validate() is GOOD


@pytest.mark.parametrize(
    "spelling",
    [FINGERPRINT, FINGERPRINT.lower(), FINGERPRINT.replace(":", ""),
     FINGERPRINT.replace(":", " "), f"  {FINGERPRINT}\n"],
)
def test_fingerprints_in_any_spelling_normalise_alike(spelling: str) -> None:
    assert normalize_fingerprint(spelling) == FINGERPRINT


def test_ports_and_account_key() -> None:
    assert GOOD.effective_port == 993
    assert replace(GOOD, security=Security.STARTTLS).effective_port == 143
    assert replace(GOOD, security=Security.NONE).effective_port == 143
    assert replace(GOOD, port=1993).effective_port == 1993
    assert GOOD.key == "ada@example.com@imap.example.com"


def test_the_login_address_never_becomes_a_contact() -> None:
    policy = SyncSettings(account=GOOD, own_addresses=("Sales@OurCo.example",)).policy()
    assert policy.own_addresses == {"sales@ourco.example", "ada@example.com"}
    assert not policy.may_create("ADA@example.com")
    # A login that is not an address adds nothing.
    plain = SyncSettings(account=replace(GOOD, user="ada")).policy()
    assert plain.own_addresses == frozenset()


# -- persistence -----------------------------------------------------------------------------


def test_saved_settings_load_back_unchanged(ini: Path) -> None:
    settings = SyncSettings(
        account=AccountSettings(
            host="imap.example.com", user="ada@example.com", port=1993,
            security=Security.STARTTLS, auth=AuthMethod.XOAUTH2, ca_file="/etc/ca.pem",
            pin_sha256=FINGERPRINT,
        ),
        folders=("INBOX", "Clients/2026", "Entwürfe", "Sales, Europe", "with space"),
        sync_while_running=True,
        since=date(2026, 2, 28),
        poll_interval=45.5,
        own_addresses=("sales@ourco.example", "ada@example.com"),
        excluded_domains=("example.net",),
        exclude_automated=False,
        exclude_bulk=False,
    )
    assert saved_and_loaded(ini, settings) == settings


@pytest.mark.parametrize("folders", [("INBOX",), ("Only one, with a comma",), ()])
def test_folder_lists_of_one_or_none_load_back(ini: Path, folders: tuple[str, ...]) -> None:
    settings = SyncSettings(account=GOOD, folders=folders)
    assert saved_and_loaded(ini, settings).folders == folders


def test_nothing_saved_loads_the_defaults(ini: Path) -> None:
    assert load_settings(QSettings(str(ini), QSettings.Format.IniFormat)) == SyncSettings()


def test_the_password_is_never_written(ini: Path) -> None:
    save_settings(QSettings(str(ini), QSettings.Format.IniFormat), SyncSettings(account=GOOD))
    assert "password=" not in ini.read_text().lower()


def test_unreadable_values_fall_back_to_defaults(ini: Path) -> None:
    ini.write_text(
        "[xtmail]\n"
        "email\\host=imap.example.com\n"
        "email\\security=carrier-pigeon\n"
        "email\\auth=telepathy\n"
        "email\\port=nine\n"
        "email\\since=yesterday\n"
        "email\\poll_interval=often\n"
        "email\\exclude_bulk=no\n"
    )
    loaded = load_settings(QSettings(str(ini), QSettings.Format.IniFormat))
    assert loaded.account == AccountSettings(host="imap.example.com")
    assert loaded.since is None
    assert loaded.poll_interval == SyncSettings().poll_interval
    assert loaded.exclude_bulk is False
    assert loaded.folders == ("INBOX",)


@pytest.mark.parametrize(
    "settings",
    [
        SyncSettings(account=GOOD, batch_size=40),
        SyncSettings(account=GOOD, create_contacts=False),
        SyncSettings(account=replace(GOOD, timeout=5.0)),
    ],
    ids=["batch_size", "create_contacts", "timeout"],
)
def test_every_setting_loads_back(ini: Path, settings: SyncSettings) -> None:
    assert saved_and_loaded(ini, settings) == settings


# -- several accounts ------------------------------------------------------------------------

SECOND = AccountSettings(host="mail.other.example", user="ada.l", security=Security.STARTTLS,
                         password_command="pass show mail/other")


def test_several_accounts_each_with_their_folders_load_back(ini: Path) -> None:
    email = EmailSettings(
        accounts=(
            MailAccount(GOOD, folders=("INBOX", "Sent"), delimiter="/"),
            MailAccount(SECOND, folders=("INBOX.Clients",), enabled=False, delimiter="."),
        ),
        options=SyncSettings(sync_while_running=True, own_addresses=("sales@ourco.example",)),
    )
    save_email_settings(QSettings(str(ini), QSettings.Format.IniFormat), email)
    loaded = load_email_settings(QSettings(str(ini), QSettings.Format.IniFormat))
    assert loaded == email
    # The logins that are addresses are the user's own too, each once.
    assert loaded.own_addresses() == ("sales@ourco.example", "ada@example.com")
    # Only enabled accounts are synchronized, each with its own folders.
    (only,) = loaded.enabled()
    assert only.account == GOOD and only.folders == ("INBOX", "Sent")
    assert only.sync_while_running
    assert only.policy().own_addresses == {"sales@ourco.example", "ada@example.com"}
    # The first account is still where the single-account format kept it.
    assert load_settings(QSettings(str(ini), QSettings.Format.IniFormat)).account == GOOD


def test_the_single_account_format_is_still_read(ini: Path) -> None:
    ini.write_text(
        "[xtmail]\n"
        "email\\host=imap.example.com\n"
        "email\\user=ada@example.com\n"
        "email\\folders=INBOX, Sent\n"
        "email\\sync_while_running=true\n"
    )
    loaded = load_email_settings(QSettings(str(ini), QSettings.Format.IniFormat))
    assert loaded.accounts == (MailAccount(GOOD, folders=("INBOX", "Sent")),)
    assert loaded.sync_while_running


def test_save_settings_keeps_the_other_accounts(ini: Path) -> None:
    store = QSettings(str(ini), QSettings.Format.IniFormat)
    save_email_settings(store, EmailSettings(accounts=(MailAccount(GOOD), MailAccount(SECOND))))
    save_settings(store, SyncSettings(account=GOOD, folders=("Archive",)))
    loaded = load_email_settings(QSettings(str(ini), QSettings.Format.IniFormat))
    assert [(m.account, m.folders) for m in loaded.accounts] == [
        (GOOD, ("Archive",)), (SECOND, ("INBOX",))]


def test_email_settings_say_what_to_fix() -> None:
    assert "enter an account first" in " ".join(
        EmailSettings(options=SyncSettings(sync_while_running=True)).problems())
    twice = EmailSettings(accounts=(MailAccount(GOOD), MailAccount(GOOD)))
    assert f"The account {GOOD.key} is configured twice." in twice.problems()
    bad = EmailSettings(accounts=(MailAccount(replace(GOOD, port=70000)),))
    with pytest.raises(ConfigError, match=f"{GOOD.key}: The port 70000"):
        bad.validate()
    # An account left empty is dropped, not refused.
    assert EmailSettings(accounts=(MailAccount(), MailAccount(GOOD))).validate().accounts == (
        MailAccount(GOOD),)


@pytest.mark.parametrize(
    ("raw", "worded"),
    [
        ("Cannot connect to imap.example.com:993: [Errno -2] Name or service not known.",
         "Cannot connect to imap.example.com:993: no such host (check the server name)."),
        ("Cannot connect to h:993: [Errno 11001] getaddrinfo failed",
         "Cannot connect to h:993: no such host (check the server name)"),
        ("Cannot connect to h:143: [Errno 111] Connection refused",
         "Cannot connect to h:143: the server refused the connection (check the port and the "
         "security setting)"),
        ("Cannot connect to h:993: [Errno 113] No route to host",
         "Cannot connect to h:993: No route to host"),
        ("could not be verified: self-signed certificate.. If you trust it... pin it.",
         "could not be verified: self-signed certificate. If you trust it... pin it."),
    ],
)
def test_network_errors_are_worded_for_people(raw: str, worded: str) -> None:
    assert tidy_text(raw) == worded


def test_describe_error_names_the_cause_for_the_account() -> None:
    import socket

    try:
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except OSError as exc:
            raise ConfigError(f"Cannot connect to imap.example.com:993: {exc}") from exc
    except ConfigError as error:
        assert describe_error(error, GOOD) == (
            "imap.example.com: no such host; check the server name.")
        assert "Errno" not in describe_error(error)
