"""Mail the ERP sends itself: order acknowledgements, incident updates (association rule 6).

:func:`record_sent_mail` is the one public way to record such mail. It goes through the
same engine as imported mail (parse, store once, contacts, references, replies) and adds the
ties the sending process names explicitly, so a later reply finds the same documents.
:func:`send_mail` sends through SMTP and records what it sent.
"""

from __future__ import annotations

import copy
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, getaddresses, make_msgid

import psycopg

from xtmail.sync.db import writer
from xtmail.sync.db.writer import Importer
from xtmail.sync.errors import ConfigError, XtmailError
from xtmail.sync.mail import registry
from xtmail.sync.values import ImportPolicy, Incoming


def record_sent_mail(
    conn: psycopg.Connection,
    raw: bytes,
    ties: Sequence[tuple[str, int]] = (),
    *,
    policy: ImportPolicy | None = None,
    source: str = "erp",
) -> int:
    """Store ``raw`` as mail sent by the ERP and tie it; return its ``eml_id``.

    ``ties`` are (document type code, document id) pairs, for example ``[("S", 42)]``; each
    document must exist. Recording the same message twice stores it once. A message that was
    removed from the ERP and is kept out, or that a blocked-sender rule keeps out, is not
    recorded: the result is ``writer.SKIPPED`` (0). ``source`` is kept with the record
    (``xtmail.msg.msg_source``): ``erp`` for mail the ERP sent itself, ``connect-batch`` for
    mail rebuilt from a row of Connect's batch manager.
    """
    _check_documents(conn, ties)
    return _record(conn, raw, ties, policy, source)


def _check_documents(conn: psycopg.Connection, ties: Sequence[tuple[str, int]]) -> None:
    for code, doc_id in ties:
        if registry.find(code) is None:
            raise ConfigError(
                f"{code!r} is not a document type",
                hint="Use one of " + ", ".join(d.code for d in registry.DOCUMENT_TYPES) + ".")
        writer.check_document(conn, code, doc_id)


def _record(
    conn: psycopg.Connection,
    raw: bytes,
    ties: Sequence[tuple[str, int]],
    policy: ImportPolicy | None,
    source: str = "erp",
) -> int:
    result = Importer(conn, policy).import_batch(
        [Incoming(raw)], source=source, extra_ties=ties
    )
    eml_id = result.eml_ids[0]
    if eml_id == writer.SKIPPED:
        # Removed earlier and kept out, or from a blocked sender (docs/privacy.md): the
        # user's decision stands for mail the ERP sends too; nothing is recorded.
        return writer.SKIPPED
    if not result.new[0] and ties:
        # Already stored (sent twice, or imported first): still make sure of the ties.
        writer.insert_ties(conn, [(eml_id, code, doc_id) for code, doc_id in ties])
    return eml_id


@dataclass(frozen=True)
class SmtpSettings:
    """How to reach the SMTP server mail is sent through.

    ``security`` is ``"starttls"`` (default), ``"ssl"`` or ``"none"`` (only for a relay on
    the same machine)."""

    host: str
    port: int
    security: str = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    ssl_context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        if self.security not in {"starttls", "ssl", "none"}:
            raise ConfigError(f"Unknown SMTP security {self.security!r}",
                              hint="Use 'starttls', 'ssl' or 'none'.")


@dataclass(frozen=True)
class SentMail:
    """What :func:`send_mail` did: the record's ``eml_id``, and the recipients the server
    refused while it took the message for the others (address -> (code, reply))."""

    eml_id: int
    refused: dict[str, tuple[int, str]]


def send_mail(
    conn: psycopg.Connection,
    message: EmailMessage,
    *,
    host: str,
    port: int,
    ties: Sequence[tuple[str, int]] = (),
    security: str = "starttls",
    ssl_context: ssl.SSLContext | None = None,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 30.0,
    policy: ImportPolicy | None = None,
) -> SentMail:
    """Send ``message`` through an SMTP server, then record it.

    Date and Message-ID (in the sender's domain) are added when missing so the stored copy
    and the delivered one are the same message. The documents in ``ties`` are checked
    before anything is sent: a wrong tie must not deliver mail that then cannot be recorded
    (a retry would send it twice). ``policy`` is the import policy of the record; by
    default the sender's own address is excluded from contact creation, as an ERP's own
    mailbox is not a correspondent. Recipients the server refused while it took the
    message for the others are in the result (the message is sent and recorded); when it
    takes it for nobody, nothing is recorded and the error says why.
    """
    server = SmtpSettings(host, port, security, username, password, timeout, ssl_context)
    _check_documents(conn, ties)
    senders = [addr for _, addr in getaddresses([str(v) for v in message.get_all("From", [])])]
    if policy is None:
        policy = ImportPolicy.build(own_addresses=senders)
    message = copy.deepcopy(message)  # the caller's message stays as it was
    if "Date" not in message:
        message["Date"] = format_datetime(datetime.now(UTC))
    if "Message-ID" not in message:
        domain = senders[0].rpartition("@")[2] if senders else ""
        message["Message-ID"] = make_msgid(domain=domain if "." in domain else None)
    # The recorded copy keeps Bcc, like a Sent folder; the transmitted one must not carry it.
    # The identity hash ignores Bcc, so both are one message when the copy comes back.
    recorded = message.as_bytes(policy=SMTP)
    try:
        refused = transmit(server, message)
    except (smtplib.SMTPException, OSError) as exc:
        raise XtmailError(
            f"Could not send mail through {host}:{port}: {_smtp_text(exc)}",
            hint="Check the SMTP server settings; the message was not recorded.",
        ) from exc
    eml_id = _record(conn, recorded, ties, policy)  # its documents were checked before sending
    return SentMail(eml_id, refused)


def transmit(server: SmtpSettings, message: EmailMessage) -> dict[str, tuple[int, str]]:
    """Hand ``message`` to the SMTP server for its To, Cc and Bcc (the Bcc header itself is
    not transmitted); return the recipients it refused while accepting the others.

    Raises what smtplib raises (``SMTPRecipientsRefused`` when it takes the message for no
    one, ``SMTPResponseException`` with the server's code) and ``OSError`` for the network.
    """
    recipients = _recipients(message)
    outgoing = copy.deepcopy(message)
    del outgoing["Bcc"]
    transmitted = outgoing.as_bytes(policy=SMTP)
    context = server.ssl_context or ssl.create_default_context()
    client: smtplib.SMTP
    if server.security == "ssl":
        client = smtplib.SMTP_SSL(server.host, server.port, timeout=server.timeout,
                                  context=context)
    else:
        client = smtplib.SMTP(server.host, server.port, timeout=server.timeout)
    with client:
        if server.security == "starttls":
            client.starttls(context=context)
        if server.username:
            client.login(server.username, server.password or "")
        sender = getaddresses([str(message["From"] or "")])
        refused = client.sendmail(sender[0][1] if sender else "", recipients, transmitted)
    return {addr: (code, _decode(text)) for addr, (code, text) in refused.items()}


def _smtp_text(exc: BaseException) -> str:
    """An SMTP error as a person reads it: the server's reply, not a bytes literal."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "every recipient was refused: " + "; ".join(
            f"{addr} ({code} {_decode(text)})"
            for addr, (code, text) in sorted(exc.recipients.items()))
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {_decode(exc.smtp_error)}"
    return str(exc)


def _decode(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _recipients(message: EmailMessage) -> list[str]:
    fields = [str(v) for name in ("To", "Cc", "Bcc") for v in message.get_all(name, [])]
    return [addr for _, addr in getaddresses(fields) if addr]
