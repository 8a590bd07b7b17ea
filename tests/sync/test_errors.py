"""One error hierarchy: every class says how to react, driver errors are translated once at
the database boundary, and the CLI exits with the error's code."""

from __future__ import annotations

from pathlib import Path

import psycopg
import psycopg_pool
import pytest

from tests.helpers.mail import make_message
from xtmail.app import cli
from xtmail.app.localpg import free_port
from xtmail.sync.db.errors import translate, translated
from xtmail.sync.errors import (
    ERROR_KINDS,
    AuthenticationFailed,
    CertificateError,
    ConfigError,
    DatabaseConflict,
    DatabaseError,
    DatabaseUnavailable,
    ImapError,
    MigrationError,
    PermissionDenied,
    Reaction,
    TransientImapError,
    XtmailError,
)
from xtmail.sync.imap import account

# -- the classes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "kind", "exit_code", "reaction"), [
    (XtmailError, "general", 1, Reaction.STOP),
    (ConfigError, "config", 2, Reaction.STOP),
    (AuthenticationFailed, "authentication", 3, Reaction.STOP),
    (CertificateError, "certificate", 4, Reaction.STOP),
    (ImapError, "network", 5, Reaction.STOP),
    (TransientImapError, "network", 5, Reaction.RETRY_LATER),
    (DatabaseError, "database", 6, Reaction.STOP),
    (DatabaseUnavailable, "database", 6, Reaction.RETRY_LATER),
    (DatabaseConflict, "database", 6, Reaction.RETRY_NOW),
    (PermissionDenied, "permission", 6, Reaction.STOP),
    (MigrationError, "database", 6, Reaction.STOP),
])
def test_every_error_class_says_how_to_react(
    cls: type[XtmailError], kind: str, exit_code: int, reaction: Reaction
) -> None:
    error = cls("What went wrong.", hint="What to do.")
    assert (error.kind, error.exit_code, error.reaction) == (kind, exit_code, reaction)
    assert error.kind in ERROR_KINDS
    assert error.user_text() == "What went wrong.\nWhat to do."


def test_the_cli_exit_codes_are_the_error_classes() -> None:
    assert (cli.EXIT_CONFIG, cli.EXIT_AUTH, cli.EXIT_CERTIFICATE, cli.EXIT_NETWORK,
            cli.EXIT_DATABASE) == (2, 3, 4, 5, 6)
    assert account.ERROR_KINDS is ERROR_KINDS


# -- the translation -----------------------------------------------------------------------------


@pytest.mark.parametrize(("driver_error", "expected"), [
    (psycopg.OperationalError("server closed the connection unexpectedly"), DatabaseUnavailable),
    (psycopg_pool.PoolTimeout("couldn't get a connection after 5 sec"), DatabaseUnavailable),
    (psycopg.errors.AdminShutdown("terminating connection"), DatabaseUnavailable),
    (psycopg.errors.InsufficientPrivilege("permission denied for table cntct"),
     PermissionDenied),
    (psycopg.errors.SerializationFailure("could not serialize access"), DatabaseConflict),
    (psycopg.errors.DeadlockDetected("deadlock detected"), DatabaseConflict),
    (psycopg.errors.UniqueViolation("duplicate key value"), DatabaseError),
    (psycopg.errors.UndefinedTable('relation "cohead" does not exist'), DatabaseError),
    (psycopg.InterfaceError("the cursor is closed"), DatabaseError),
])
def test_driver_errors_become_xtmail_errors(
    driver_error: psycopg.Error, expected: type[DatabaseError]
) -> None:
    error = translate(driver_error, "to store mail")
    assert type(error) is expected
    assert "to store mail" in str(error)
    assert str(driver_error) in str(error)
    assert error.hint, "every translated error says what to do"


def test_a_closed_store_says_so() -> None:
    error = translate(psycopg_pool.PoolClosed("the pool 'x' is already closed"), "to read")
    assert type(error) is DatabaseUnavailable
    assert error.user_text() == ("The connection to the database is closed.\n"
                                 "Reopen the window; if that does not help, restart the program.")


def test_translated_raises_the_translation_from_the_driver_error() -> None:
    cause = psycopg.OperationalError("connection refused")
    with pytest.raises(DatabaseUnavailable) as info, translated("to read"):
        raise cause
    assert info.value.__cause__ is cause
    with pytest.raises(ValueError, match="not ours"), translated():
        raise ValueError("not ours")  # only driver errors are translated


def test_a_caller_may_name_its_own_class_and_privilege_hint() -> None:
    refused = translate(psycopg.errors.SyntaxError("syntax error"), refused=MigrationError)
    assert type(refused) is MigrationError
    denied = translate(psycopg.errors.InsufficientPrivilege("must be owner"),
                       privilege_hint="Run it as the owner.")
    assert denied.user_text().endswith("\nRun it as the owner.")


def dead_dsn() -> str:
    """A DSN to a port where nothing listens."""
    return f"host=127.0.0.1 port={free_port()} dbname=xtmail user=xtmail connect_timeout=5"


# -- the CLI ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["init-db", "import"])
def test_the_cli_exits_with_the_database_code_when_the_database_is_down(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.eml").write_bytes(make_message())
    args = [command, "--dsn", dead_dsn()]
    if command == "import":
        args += ["--quiet", str(tmp_path)]
    assert cli.main(args) == cli.EXIT_DATABASE == DatabaseUnavailable.exit_code
    err = capsys.readouterr().err
    assert err.startswith("xtmail: Cannot reach the database: ")
    assert "Check that the database server is running" in err


def test_the_cli_exits_with_the_config_code_for_a_wrong_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["import", "--dsn", dead_dsn(), str(tmp_path / "missing")]
    assert cli.main(args) == cli.EXIT_CONFIG == ConfigError.exit_code
    assert "no such file or folder" in capsys.readouterr().err
