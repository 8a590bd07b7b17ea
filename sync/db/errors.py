"""The one translation of database driver errors into xtmail's errors.

psycopg errors stop here: everything above the database package sees only
:class:`~xtmail.sync.errors.XtmailError` subclasses, which say what went wrong, what to do,
and how to react. Code that talks to the driver either calls :func:`translate` where it
already catches a driver error, or runs inside :func:`translated`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from xtmail.sync.errors import (
    DatabaseConfigError,
    DatabaseConflict,
    DatabaseError,
    DatabaseUnavailable,
    PermissionDenied,
    SchemaMissing,
)

#: What to do when the database cannot be reached or the connection broke.
UNAVAILABLE_HINT = ("Check that the database server is running and the connection settings "
                    "(host, port, database name, user), then try again.")
#: What to do when the role lacks a privilege.
PRIVILEGE_HINT = ("Ask your xTuple administrator to make your database role a member of "
                  "xtrole and to run 'xtmail init-db' as the database owner (it grants xtrole "
                  "what ERP users need), then try again.")
#: What to do when xtmail's tables are missing or older than this version.
SCHEMA_HINT = ("Run 'xtmail init-db --dsn ...' with this database's connection string, as "
               "the database owner (it creates xtmail's tables or brings them up to date), "
               "then try again.")
#: What to do when the server does not answer in time.
TIMEOUT_HINT = ("The server is overloaded, or another session holds a lock on the same "
                "tables; try again later. If it keeps happening, tell your administrator.")
#: What to do when a connection got no answer in time.
SILENT_HINT = ("Check that the database server is running and not overloaded, and the host and "
               "port in the connection string (another program may be listening there), then "
               "try again.")
#: What to do about a connection string that cannot be read.
DSN_HINT = ("Write the connection string as 'host=HOST port=PORT dbname=DATABASE user=USER' "
            "or as postgresql://USER@HOST:PORT/DATABASE.")
#: What to do about a database, a user or a host that does not exist.
NAME_HINT = ("Check the host, database name (dbname) and user in the connection string. "
             "'xtmail init-db' does not create databases or users: your administrator does.")
#: What to do when the server refused the login.
LOGIN_HINT = ("Check the user and password (in the connection string, PGPASSWORD or the "
              "password file ~/.pgpass) and that the server lets this user connect from this "
              "computer (pg_hba.conf), then try again.")
#: What to do about any other refusal.
REFUSED_HINT = "Try again; if it happens again, tell your administrator what it says."


def _detail(exc: psycopg.Error) -> str:
    """The server's one-line reason, else the driver's first line, else the class name."""
    diag = getattr(exc, "diag", None)
    primary = diag.message_primary if diag is not None else None
    if primary:
        return str(primary)
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


_DENIED = re.compile(
    r"permission denied for (schema|table|relation|view|sequence|function|procedure) (\S+)")
_GRANTS = {
    "schema": "USAGE on schema {}",
    "table": "privileges on table {}",
    "relation": "privileges on table {}",
    "view": "privileges on view {}",
    "sequence": "USAGE on sequence {}",
    "function": "EXECUTE on function {}",
    "procedure": "EXECUTE on procedure {}",
}


def missing_grant(detail: str) -> str | None:
    """The grant a "permission denied for ..." message says is missing, in words."""
    match = _DENIED.search(detail)
    return _GRANTS[match[1]].format(match[2].strip('"')) if match else None


# A connection that failed carries no SQLSTATE (libpq reports it as text), so the reason is
# read from the message; a server answering in another language falls back to "cannot be
# reached", which retries. The connection-string errors come from the client library.
_BAD_DSN = re.compile(
    r"connection info string|connection option|invalid URI|percent-encoded|bad value for "
    r"|invalid port number|invalid integer value|invalid \w+ value")
_NO_SUCH_NAME = re.compile(
    r"(database|role) \"[^\"]*\" does not exist"
    r"|(could not translate host name|failed to resolve host) .*(not known|nor servname"
    r"|No such host|No address associated)")
_LOGIN_REFUSED = re.compile(
    r"authentication failed|no password supplied|no pg_hba\.conf entry|password is required"
    r"|pg_hba\.conf rejects")
# "relation/schema/function ... does not exist" naming xtmail's or Connect's schemas, or the
# contact tables every xTuple database has: init-db did not run (it creates the contact tables
# where there are none), or the schema is older than this version.
_OUR_OBJECT = re.compile(r"\"(xtmail|xtbatch)[.\"]|\"cntct(eml)?\"")
_MISSING_OBJECT = {"3F000", "42P01", "42883", "42703"}
_BAD = "connection is bad: "
# Statement timeout, lock timeout.
_TIMED_OUT = {"57014", "55P03"}


def translate(
    exc: psycopg.Error,
    doing: str = "",
    *,
    refused: type[DatabaseError] = DatabaseError,
    privilege_hint: str = PRIVILEGE_HINT,
) -> DatabaseError:
    """The xtmail error for the driver error ``exc``; raise it ``from exc``.

    ``doing`` names the work that failed, as in "to store mail". ``refused`` is the class for
    an error that is neither an outage, a lost race, a missing privilege, a wrong setting nor
    a missing schema (for example :class:`~xtmail.sync.errors.MigrationError`);
    ``privilege_hint`` replaces the hint of a missing privilege where the caller knows better
    who can help.
    """
    detail = _detail(exc)
    what = f" {doing}" if doing else ""
    sqlstate = exc.sqlstate or ""
    # Class 40, transaction rollback (deadlock, serialization failure): psycopg makes these
    # OperationalErrors, but not subclasses of TransactionRollback, so the code tells.
    if sqlstate.startswith("40"):
        return DatabaseConflict(
            f"The database stopped a transaction{what} that ran into another one: {detail}",
            hint="Try again.",
        )
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        grant = missing_grant(detail)
        missing = f" Your database role lacks {grant}." if grant else ""
        return PermissionDenied(f"Not allowed{what}: {detail}.{missing}", hint=privilege_hint)
    if sqlstate in _MISSING_OBJECT and _OUR_OBJECT.search(detail) and refused is DatabaseError:
        return SchemaMissing(
            "The database is not set up for xtmail (its tables are missing or older than this "
            f"version, or this is not the ERP's database): {detail}", hint=SCHEMA_HINT)
    if sqlstate in _TIMED_OUT:
        return DatabaseUnavailable(f"The database did not answer in time{what}: {detail}",
                                   hint=TIMEOUT_HINT)
    if not sqlstate:
        text = str(exc)
        if _BAD_DSN.search(text):
            return DatabaseConfigError(
                f"The connection string is not valid: {detail.removeprefix(_BAD)}", hint=DSN_HINT)
        if _NO_SUCH_NAME.search(text):
            return DatabaseConfigError(f"Cannot connect to the database{what}: {_reason(text)}",
                                       hint=NAME_HINT)
        if _LOGIN_REFUSED.search(text):
            return DatabaseConfigError(
                f"The database refused the login{what}: {_reason(text)}", hint=LOGIN_HINT)
        if "timeout expired" in text:
            return DatabaseUnavailable(
                f"The database did not answer in time{what}: {detail}", hint=SILENT_HINT)
    # Connection refused or lost, server shutting down, out of connections or disk: all
    # OperationalErrors.
    if isinstance(exc, psycopg.OperationalError):
        return DatabaseUnavailable(
            f"Cannot reach the database{what}: {detail}", hint=UNAVAILABLE_HINT
        )
    return refused(f"The database refused{what}: {detail}", hint=REFUSED_HINT)


def _reason(text: str) -> str:
    """The server's reason in a failed connection's message, without libpq's preamble
    ('connection failed: connection to server at ... failed: FATAL:  ')."""
    last = text.strip().splitlines()[-1] if text.strip() else text
    for marker in ("FATAL:", "failed:"):
        if marker in last:
            last = last.rsplit(marker, 1)[1]
    return " ".join(last.split())


@contextmanager
def translated(
    doing: str = "",
    *,
    refused: type[DatabaseError] = DatabaseError,
    privilege_hint: str = PRIVILEGE_HINT,
) -> Iterator[None]:
    """Run the block with driver errors translated (see :func:`translate`).

    A plain ``with`` also serves coroutines: awaits inside the block are covered.
    """
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc, doing, refused=refused, privilege_hint=privilege_hint) from exc
