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
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, getaddresses, make_msgid

import psycopg

from xtmail.sync.db import writer
from xtmail.sync.db.writer import Importer
from xtmail.sync.errors import ConfigError, XtmailError
from xtmail.sync.values import ImportPolicy, Incoming


def record_sent_mail(
    conn: psycopg.Connection,
    raw: bytes,
    ties: Sequence[tuple[str, int]] = (),
    *,
    policy: ImportPolicy | None = None,
) -> int:
    """Store ``raw`` as mail sent by the ERP and tie it; return its ``eml_id``.

    ``ties`` are (document type code, document id) pairs, for example ``[("S", 42)]``; each
    document must exist. Recording the same message twice stores it once.
    """
    _check_documents(conn, ties)
    return _record(conn, raw, ties, policy)


def _check_documents(conn: psycopg.Connection, ties: Sequence[tuple[str, int]]) -> None:
    for code, doc_id in ties:
        writer.check_document(conn, code, doc_id)


def _record(
    conn: psycopg.Connection,
    raw: bytes,
    ties: Sequence[tuple[str, int]],
    policy: ImportPolicy | None,
) -> int:
    result = Importer(conn, policy).import_batch(
        [Incoming(raw)], source="erp", extra_ties=ties
    )
    eml_id = result.eml_ids[0]
    if not result.new[0] and ties:
        # Already stored (sent twice, or imported first): still make sure of the ties.
        writer.insert_ties(conn, [(eml_id, code, doc_id) for code, doc_id in ties])
    return eml_id


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
) -> int:
    """Send ``message`` through an SMTP server, then record it; return its ``eml_id``.

    ``security`` is ``"starttls"`` (default), ``"ssl"`` or ``"none"`` (only for a relay on
    the same machine). Date and Message-ID are added when missing so the stored copy and
    the delivered one are the same message. The documents in ``ties`` are checked before
    anything is sent: a wrong tie must not deliver mail that then cannot be recorded (a
    retry would send it twice). ``policy`` is the import policy of the record; by default
    the sender's own address is excluded from contact creation, as an ERP's own mailbox is
    not a correspondent.
    """
    if security not in {"starttls", "ssl", "none"}:
        raise ConfigError(f"Unknown SMTP security {security!r}",
                          hint="Use 'starttls', 'ssl' or 'none'.")
    _check_documents(conn, ties)
    if policy is None:
        senders = [addr for _, addr in getaddresses([str(v) for v in message.get_all("From", [])])]
        policy = ImportPolicy.build(own_addresses=senders)
    message = copy.deepcopy(message)  # the caller's message stays as it was
    if "Date" not in message:
        message["Date"] = format_datetime(datetime.now(UTC))
    if "Message-ID" not in message:
        message["Message-ID"] = make_msgid(domain=host if "." in host else None)
    # The recorded copy keeps Bcc, like a Sent folder; the transmitted one must not carry it.
    # The identity hash ignores Bcc, so both are one message when the copy comes back.
    recorded = message.as_bytes(policy=SMTP)
    recipients = _recipients(message)
    outgoing = copy.deepcopy(message)
    del outgoing["Bcc"]
    transmitted = outgoing.as_bytes(policy=SMTP)
    context = ssl_context or ssl.create_default_context()
    try:
        client: smtplib.SMTP
        if security == "ssl":
            client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
        with client:
            if security == "starttls":
                client.starttls(context=context)
            if username:
                client.login(username, password or "")
            client.sendmail(message["From"], recipients, transmitted)
    except (smtplib.SMTPException, OSError) as exc:
        raise XtmailError(
            f"Could not send mail through {host}:{port}: {exc}",
            hint="Check the SMTP server settings; the message was not recorded.",
        ) from exc
    return _record(conn, recorded, ties, policy)  # its documents were checked before sending


def _recipients(message: EmailMessage) -> list[str]:
    fields = [str(v) for name in ("To", "Cc", "Bcc") for v in message.get_all(name, [])]
    return [addr for _, addr in getaddresses(fields) if addr]
