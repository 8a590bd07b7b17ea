"""One error hierarchy for xtmail.

Every error a user may see says what went wrong and what to do about it. The class also
tells every caller how to react, so that the engine, the CLI and the views need no mapping
of their own:

* ``kind``: what the user must look at (one of :data:`ERROR_KINDS`); the sync service
  reports it with the message;
* ``exit_code``: the exit code of the ``xtmail`` command that ends with this error;
* ``reaction``: retry now, retry later, or stop until reconfigured (:class:`Reaction`).

Driver errors never get here raw: the database package translates them once
(:mod:`xtmail.sync.db.errors`).
"""

from __future__ import annotations

import enum


class Reaction(enum.Enum):
    """How a caller reacts to an error."""

    #: Run the same work again at once: it met a concurrent change and lost.
    RETRY_NOW = "retry now"
    #: Wait, then try again: the server or the network is away and will be back.
    RETRY_LATER = "retry later"
    #: Trying again cannot help until someone changes a setting, a password or a privilege.
    STOP = "stop until reconfigured"


class XtmailError(Exception):
    """Base of every error xtmail raises on purpose."""

    #: What the person should do; shown under the message in the UI and the CLI.
    hint: str = ""
    #: What the user must look at (one of :data:`ERROR_KINDS`).
    kind: str = "general"
    #: The exit code of the ``xtmail`` command failing with this error.
    exit_code: int = 1
    reaction: Reaction = Reaction.STOP

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def user_text(self) -> str:
        """The message and, when there is one, what to do about it."""
        text = str(self)
        return f"{text}\n{self.hint}" if self.hint else text


class ConfigError(XtmailError):
    """A setting is wrong or missing: stop until the user fixes it."""

    kind = "config"
    exit_code = 2  # as argparse's usage errors


class DatabaseError(XtmailError):
    """The database refused or failed an operation."""

    kind = "database"
    exit_code = 6


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached now, or the connection broke: retry later."""

    reaction = Reaction.RETRY_LATER


class DatabaseConflict(DatabaseError):
    """A transaction lost against a concurrent one (deadlock, serialization): run it again."""

    reaction = Reaction.RETRY_NOW


class DatabaseConfigError(ConfigError, DatabaseError):
    """The connection settings are wrong: a malformed connection string, a database, user or
    host that does not exist, a password the server refused. Retrying cannot help."""


class SchemaMissing(DatabaseError):
    """xtmail's tables are not in the database, or are older than this version: run
    ``xtmail init-db``."""


class PermissionDenied(DatabaseError):
    """The connected role lacks a privilege (for example to maintain contacts)."""

    kind = "permission"


class MigrationError(DatabaseError):
    """A schema migration could not be applied."""


class ImapError(XtmailError):
    """An IMAP operation failed."""

    kind = "network"
    exit_code = 5


class TransientImapError(ImapError):
    """Network drop or server restart: reconnect with backoff."""

    reaction = Reaction.RETRY_LATER


class AuthenticationFailed(ImapError):
    """The server refused the credentials: stop this account until reconfigured."""

    kind = "authentication"
    exit_code = 3


class CertificateError(ImapError):
    """The server's TLS certificate did not verify and is not pinned."""

    kind = "certificate"
    exit_code = 4

    #: The SHA-256 fingerprint of the certificate the server showed, to offer for pinning.
    fingerprint: str | None = None


def _classes(cls: type[XtmailError]) -> list[type[XtmailError]]:
    """``cls`` and its subclasses defined in this module, parents first."""
    found = [cls]
    for sub in cls.__subclasses__():
        if sub.__module__ == __name__:
            found += _classes(sub)
    return found


#: Every ``kind`` the errors of this module carry, for code that handles each one.
ERROR_KINDS: tuple[str, ...] = tuple(dict.fromkeys(c.kind for c in _classes(XtmailError)))
