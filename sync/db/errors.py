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
    DatabaseConflict,
    DatabaseError,
    DatabaseUnavailable,
    PermissionDenied,
)

#: What to do when the database cannot be reached or the connection broke.
UNAVAILABLE_HINT = ("Check that the database server is running and the connection settings "
                    "(host, port, database name, user), then try again.")
#: What to do when the role lacks a privilege.
PRIVILEGE_HINT = ("Ask your xTuple administrator to make your database role a member of "
                  "xtrole and to run 'xtmail init-db' as the database owner (it grants xtrole "
                  "what ERP users need), then try again.")
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


def translate(
    exc: psycopg.Error,
    doing: str = "",
    *,
    refused: type[DatabaseError] = DatabaseError,
    privilege_hint: str = PRIVILEGE_HINT,
) -> DatabaseError:
    """The xtmail error for the driver error ``exc``; raise it ``from exc``.

    ``doing`` names the work that failed, as in "to store mail". ``refused`` is the class for
    an error that is neither an outage, a lost race nor a missing privilege (for example
    :class:`~xtmail.sync.errors.MigrationError`); ``privilege_hint`` replaces the hint of a
    missing privilege where the caller knows better who can help.
    """
    detail = _detail(exc)
    what = f" {doing}" if doing else ""
    # Class 40, transaction rollback (deadlock, serialization failure): psycopg makes these
    # OperationalErrors, but not subclasses of TransactionRollback, so the code tells.
    if (exc.sqlstate or "").startswith("40"):
        return DatabaseConflict(
            f"The database stopped a transaction{what} that ran into another one: {detail}",
            hint="Try again.",
        )
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        grant = missing_grant(detail)
        missing = f" Your database role lacks {grant}." if grant else ""
        return PermissionDenied(f"Not allowed{what}: {detail}.{missing}", hint=privilege_hint)
    # Connection refused or lost, server shutting down, out of connections or disk: all
    # OperationalErrors.
    if isinstance(exc, psycopg.OperationalError):
        return DatabaseUnavailable(
            f"Cannot reach the database{what}: {detail}", hint=UNAVAILABLE_HINT
        )
    return refused(f"The database refused{what}: {detail}", hint=REFUSED_HINT)


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
