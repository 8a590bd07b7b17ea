"""One error hierarchy for xtmail.

Every error a user may see says what went wrong and what to do about it. The class tells
the caller how to react (STYLE.md 6): retry now, retry later, or stop until reconfigured.
"""

from __future__ import annotations


class XtmailError(Exception):
    """Base of every error xtmail raises on purpose."""

    #: What the person should do; shown under the message in the UI and the CLI.
    hint: str = ""

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


class DatabaseError(XtmailError):
    """The database refused or failed an operation."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached now: retry later."""


class PermissionDenied(DatabaseError):
    """The connected role lacks a privilege (for example to maintain contacts)."""


class MigrationError(DatabaseError):
    """A schema migration could not be applied."""


class ImapError(XtmailError):
    """An IMAP operation failed."""


class TransientImapError(ImapError):
    """Network drop or server restart: reconnect with backoff."""


class AuthenticationFailed(ImapError):
    """The server refused the credentials: stop this account until reconfigured."""


class CertificateError(ImapError):
    """The server's TLS certificate did not verify and is not pinned."""

    #: The SHA-256 fingerprint of the certificate the server showed, to offer for pinning.
    fingerprint: str | None = None
