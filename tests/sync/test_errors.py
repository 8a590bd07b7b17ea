"""One error hierarchy: every class says how to react, driver errors are translated once at
the database boundary, MailStore raises nothing else, and the CLI exits with the error's
code."""

from __future__ import annotations

import asyncio
import inspect
import secrets
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import qasync
from psycopg import sql

from tests.helpers.mail import make_message
from tests.helpers.postgres import TestDatabases
from xtmail.app import cli
from xtmail.app.localpg import free_port
from xtmail.sync.db import search
from xtmail.sync.db.errors import translate, translated
from xtmail.sync.db.mailstore import MailStore
from xtmail.sync.db.pool import AsyncPool
from xtmail.sync.db.writer import Importer
from xtmail.sync.errors import (
    ERROR_KINDS,
    AuthenticationFailed,
    CertificateError,
    ConfigError,
    DatabaseConfigError,
    DatabaseConflict,
    DatabaseError,
    DatabaseUnavailable,
    ImapError,
    MigrationError,
    PermissionDenied,
    Reaction,
    SchemaMissing,
    TransientImapError,
    XtmailError,
)
from xtmail.sync.imap import account
from xtmail.sync.values import Incoming

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
    (SchemaMissing, "database", 6, Reaction.STOP),
    # A wrong connection setting: a setting to fix (exit 2), and a database error (the sync
    # drops the database connection, not the IMAP one).
    (DatabaseConfigError, "config", 2, Reaction.STOP),
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


@pytest.mark.parametrize(("driver_error", "expected", "text"), [
    (psycopg.errors.InvalidSchemaName('schema "xtmail" does not exist'), SchemaMissing,
     "The database is not set up for xtmail"),
    (psycopg.errors.UndefinedTable('relation "xtmail.folder_state" does not exist'),
     SchemaMissing, "The database is not set up for xtmail"),
    (psycopg.errors.UndefinedTable('relation "cohead" does not exist'), DatabaseError,
     "The database refused"),  # a document table an edition lacks is not a missing schema
    (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
     DatabaseUnavailable, "did not answer in time"),
    (psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"),
     DatabaseUnavailable, "did not answer in time"),
])
def test_a_missing_schema_and_a_timeout_say_what_they_are(
    driver_error: psycopg.Error, expected: type[DatabaseError], text: str,
) -> None:
    error = translate(driver_error, "to store mail")
    assert type(error) is expected
    assert text in str(error)
    assert isinstance(error, DatabaseError)


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


# -- MailStore raises only xtmail errors -----------------------------------------------------------

#: One call of every public method of MailStore (connect and close aside).
STORE_CALLS: dict[str, Callable[[MailStore], Awaitable[Any]]] = {
    "search_messages": lambda s: s.search_messages("invoice"),
    "search_contacts": lambda s: s.search_contacts("ada"),
    "document_contacts": lambda s: s.document_contacts("S", 1),
    "document_number": lambda s: s.document_number("S", 1),
    "list_documents": lambda s: s.list_documents("S"),
    "messages_for": lambda s: s.messages_for("S", 1),
    "message": lambda s: s.message(1),
    "raw_message": lambda s: s.raw_message(1),
    "attachment": lambda s: s.attachment(1, 0),
    "message_count": lambda s: s.message_count("S", 1),
    "message_html": lambda s: s.message_html(1),
    "inline_images": lambda s: s.inline_images(1),
    "tied_ids": lambda s: s.tied_ids([1], "S", 1),
    "attach": lambda s: s.attach([1], "S", 1),
    "detach": lambda s: s.detach([1], "S", 1),
    "available_documents": lambda s: s.available_documents(),
}
#: Calls that read only the catalog, which every role may read.
CATALOG_ONLY = {"available_documents"}


def test_the_calls_cover_every_method_of_the_store() -> None:
    public = {name for name, member in inspect.getmembers(MailStore)
              if not name.startswith("_") and inspect.iscoroutinefunction(member)}
    assert public - {"connect", "close"} == set(STORE_CALLS)


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop_runner:
        yield loop_runner


def dead_dsn() -> str:
    """A DSN to a port where nothing listens."""
    return f"host=127.0.0.1 port={free_port()} dbname=xtmail user=xtmail connect_timeout=5"


def test_a_store_on_a_server_that_is_not_there_says_so(runner: asyncio.Runner) -> None:
    with pytest.raises(DatabaseUnavailable) as info:
        runner.run(MailStore.connect(dead_dsn()))
    error = info.value
    assert (error.kind, error.exit_code, error.reaction) == ("database", 6, Reaction.RETRY_LATER)
    assert str(error).startswith("Cannot reach the database to open the mail store: ")
    assert "Check that the database server is running" in error.user_text()
    assert isinstance(error.__cause__, psycopg.OperationalError)


def test_every_method_raises_database_unavailable_once_the_database_is_gone(
    runner: asyncio.Runner, db_dsn: str, conn: psycopg.Connection, databases: TestDatabases
) -> None:
    store = runner.run(MailStore.connect(db_dsn))
    allow = sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format
    database = sql.Identifier(conn.info.dbname)
    try:
        assert runner.run(store.list_documents("S")) == []
        # The database goes away under the store's open connections.
        with databases.admin() as admin:
            admin.execute(allow(database, sql.SQL("false")))
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        for name, call in STORE_CALLS.items():
            if name in CATALOG_ONLY:
                continue
            with pytest.raises(DatabaseUnavailable) as info:
                runner.run(call(store))
            error = info.value
            assert (error.kind, error.exit_code, error.reaction) == (
                "database", 6, Reaction.RETRY_LATER), name
            assert "is not currently accepting connections" in str(error), name
    finally:
        with databases.admin() as admin:
            admin.execute(allow(database, sql.SQL("true")))
        runner.run(store.close())


def test_every_method_raises_permission_denied_for_a_role_without_grants(
    runner: asyncio.Runner, db_dsn: str, conn: psycopg.Connection
) -> None:
    role = f"xt_nogrant_{secrets.token_hex(4)}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        store = runner.run(MailStore.connect(psycopg.conninfo.make_conninfo(db_dsn, user=role)))
        try:
            for name, call in STORE_CALLS.items():
                if name in CATALOG_ONLY:
                    continue
                with pytest.raises(PermissionDenied) as info:
                    runner.run(call(store))
                error = info.value
                assert (error.kind, error.exit_code, error.reaction) == (
                    "permission", 6, Reaction.STOP), name
                assert str(error).startswith("Not allowed to "), name
                assert "permission denied" in str(error), name
                assert "Your database role lacks " in str(error), name
                assert "administrator" in error.hint, name
                assert "xtrole" in error.hint, name
        finally:
            runner.run(store.close())
    finally:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_an_unknown_document_type_is_a_setting_to_fix(
    runner: asyncio.Runner, db_dsn: str
) -> None:
    store = runner.run(MailStore.connect(db_dsn))
    try:
        with pytest.raises(ConfigError, match="'ZZ' is not a document type") as info:
            runner.run(store.messages_for("ZZ", 1))
        assert (info.value.kind, info.value.exit_code) == ("config", 2)
    finally:
        runner.run(store.close())


def test_a_missing_message_is_a_database_error(runner: asyncio.Runner, db_dsn: str) -> None:
    store = runner.run(MailStore.connect(db_dsn))
    try:
        with pytest.raises(DatabaseError, match="no longer exists"):
            runner.run(store.message(424242))
    finally:
        runner.run(store.close())


# -- the pool --------------------------------------------------------------------------------------


def _import(conn: psycopg.Connection, count: int) -> list[int]:
    items = [Incoming(make_message(subject=f"Invoice {i}", message_id=f"<inv{i}@x>",
                                   date=f"Mon, {i + 1:02} Mar 2026 10:00:00 +0000"))
             for i in range(count)]
    return Importer(conn).import_batch(items, source="test").eml_ids


def test_concurrent_calls_share_the_pool_safely(
    runner: asyncio.Runner, db_dsn: str, conn: psycopg.Connection
) -> None:
    ids = _import(conn, 6)
    newest_first = ids[::-1]

    async def many(store: MailStore) -> list[Any]:
        calls = [store.search_messages("invoice"), store.search_contacts("ada")]
        calls += [store.message(i) for i in ids] + [store.raw_message(i) for i in ids]
        calls += [store.search_messages("invoice", limit=3) for _ in range(4)]
        return await asyncio.gather(*calls)

    store = runner.run(MailStore.connect(db_dsn, max_size=2))
    try:
        found, contacts, *rest = runner.run(many(store))
    finally:
        runner.run(store.close())
    assert [r.eml_id for r in found] == newest_first
    assert [c.email for c in contacts] == ["ada@example.com"]
    details, raws, limited = rest[:6], rest[6:12], rest[12:]
    assert [d.eml_id for d in details] == ids
    assert all(b"Subject: Invoice" in raw for raw in raws)
    assert [[r.eml_id for r in rows] for rows in limited] == [newest_first[:3]] * 4


def test_a_connection_the_server_dropped_is_replaced(
    runner: asyncio.Runner, db_dsn: str, conn: psycopg.Connection
) -> None:
    ids = _import(conn, 1)
    store = runner.run(MailStore.connect(db_dsn, max_size=1))
    try:
        assert runner.run(store.message(ids[0])).eml_id == ids[0]
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        assert runner.run(store.message(ids[0])).eml_id == ids[0]
    finally:
        runner.run(store.close())


def test_search_turns_jit_off_for_its_own_transaction_only(
    runner: asyncio.Runner, db_dsn: str, conn: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _import(conn, 2)
    during: list[str] = []
    real = search._search

    async def recording(aconn: psycopg.AsyncConnection[Any], *args: Any) -> list[int]:
        row = await (await aconn.execute("SELECT current_setting('jit')")).fetchone()
        during.append(str(row[0]) if row else "")
        return await real(aconn, *args)

    monkeypatch.setattr(search, "_search", recording)

    async def session_jit() -> str:
        aconn = await psycopg.AsyncConnection.connect(db_dsn, autocommit=True)
        try:
            await aconn.execute("SET jit = on")
            rows = await search.search_messages(aconn, "invoice")
            assert len(rows) == 2
            row = await (await aconn.execute("SHOW jit")).fetchone()
            return str(row[0]) if row else ""
        finally:
            await aconn.close()

    assert runner.run(session_jit()) == "on"
    assert during == ["off"]


def test_a_busy_pool_says_so(runner: asyncio.Runner, db_dsn: str) -> None:
    pool = AsyncPool(db_dsn, max_size=1, timeout=0.2)

    async def two_at_once() -> None:
        async with pool.connection():
            async with pool.connection():
                pass

    try:
        with pytest.raises(DatabaseUnavailable, match="busy") as info:
            runner.run(two_at_once())
        assert info.value.reaction is Reaction.RETRY_LATER
    finally:
        runner.run(pool.close())


def test_a_query_cancelled_midway_leaves_the_pool_working(
    runner: asyncio.Runner, db_dsn: str
) -> None:
    pool = AsyncPool(db_dsn, max_size=2)
    running = asyncio.Event()

    async def slow() -> None:
        async with pool.connection() as aconn:
            running.set()
            await aconn.execute("SELECT pg_sleep(30)")

    async def cancel_then_query() -> int:
        task = asyncio.create_task(slow())
        await running.wait()
        await asyncio.sleep(0.05)  # the query is on its way; cancel it there
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        counts = []
        for _ in range(3):
            async with pool.connection() as aconn:
                row = await (await aconn.execute("SELECT 1")).fetchone()
                counts.append(row[0] if row else 0)
        return sum(counts)

    try:
        # Reusing the cancelled query's connection would fail with "another command is
        # already in progress".
        assert runner.run(cancel_then_query()) == 3
    finally:
        runner.run(pool.close())


def test_the_store_closes_on_the_qasync_loop(qloop: qasync.QEventLoop, db_dsn: str) -> None:
    store = qloop.run_until_complete(MailStore.connect(db_dsn))
    assert not store.closed
    assert qloop.run_until_complete(store.list_documents("S")) == []
    qloop.run_until_complete(store.close())
    assert store.closed
    assert [t for t in asyncio.all_tasks(qloop) if not t.done()] == []
    with pytest.raises(DatabaseUnavailable) as info:
        qloop.run_until_complete(store.list_documents("S"))
    assert info.value.user_text() == (
        "The connection to the database is closed.\n"
        "Reopen the window; if that does not help, restart the program.")
    qloop.run_until_complete(store.close())  # closing twice is harmless


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
