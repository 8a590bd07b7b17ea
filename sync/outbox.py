"""The ERP's own outgoing mail, where xTuple Connect is absent (docs/outbox.md).

xTuple queues it with ``xtbatch.submitEmailToBatch(...)`` (migration 0011 provides it,
queuing in ``xtmail.outbox``). :func:`send_queued` sends what is due over SMTP and records
each sent message through the same engine as imported mail, so it is tied to the documents
it references and to its contacts, and replies find it.

Nothing is sent twice: a message is claimed (state ``sending``, with a lease) and committed
before it goes to the SMTP server, and marked ``sent`` with its record in one transaction
after. A sender that dies in between leaves a claim whose lease runs out; such a message may
or may not have gone out, so it becomes ``uncertain`` and waits for a person
(:func:`requeue`), never re-sent on its own. A temporary failure (a 4xx reply, a network
error) puts it back in the queue with a growing delay; a permanent one (5xx, every
recipient refused, an attachment that cannot be read) or too many attempts make it ``dead``,
with the reason kept.
"""

from __future__ import annotations

import logging
import mimetypes
import smtplib
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, getaddresses, make_msgid
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from xtmail.sync.errors import AuthenticationFailed
from xtmail.sync.outgoing import SmtpSettings, record_sent_mail, transmit
from xtmail.sync.values import ImportPolicy

log = logging.getLogger(__name__)

#: Delay before the n-th retry after a temporary failure: 1, 2, 4 ... minutes, at most 2 h.
RETRY_FIRST = timedelta(minutes=1)
RETRY_CAP = timedelta(hours=2)
#: Attempts before a message that keeps failing temporarily is given up (dead).
MAX_ATTEMPTS = 10
#: How long a claim holds: longer than any one SMTP transaction can take.
LEASE = timedelta(minutes=10)


@dataclass
class OutboxResult:
    sent: list[int] = field(default_factory=list)  # outbox ids
    retrying: list[int] = field(default_factory=list)
    dead: list[int] = field(default_factory=list)
    uncertain: list[int] = field(default_factory=list)  # claims whose sender died


def send_queued(
    conn: psycopg.Connection,
    server: SmtpSettings,
    *,
    limit: int = 100,
    worker: str | None = None,
    lease: timedelta = LEASE,
) -> OutboxResult:
    """Send up to ``limit`` due messages of the queue; ``conn`` is in autocommit mode.

    Several senders (``xtmail serve`` on several hosts) may run at once: each claims
    different messages (``FOR UPDATE SKIP LOCKED``)."""
    worker = worker or f"{socket.gethostname()}:{id(conn)}"
    result = OutboxResult()
    result.uncertain = _expire_claims(conn)
    for _ in range(limit):
        row = _claim(conn, worker, lease)
        if row is None:
            break
        _send_one(conn, server, row, result)
    return result


def requeue(conn: psycopg.Connection, ob_id: int) -> bool:
    """Put a dead or uncertain message back in the queue (a person decided to send it
    again); return whether it was."""
    cur = conn.execute(
        """UPDATE xtmail.outbox SET ob_state = 'queued', ob_next_attempt = now(),
                  ob_attempts = 0, ob_claimed_by = NULL, ob_claimed_until = NULL
            WHERE ob_id = %s AND ob_state IN ('dead', 'uncertain')""",
        (ob_id,),
    )
    return cur.rowcount == 1


def _expire_claims(conn: psycopg.Connection) -> list[int]:
    rows = conn.execute(
        """UPDATE xtmail.outbox
              SET ob_state = 'uncertain',
                  ob_last_error = 'The sender ' || coalesce(ob_claimed_by, '?')
                      || ' stopped while sending; it may have been sent. Check with the '
                      || 'recipient, then requeue it or leave it.'
            WHERE ob_state = 'sending' AND ob_claimed_until < now()
        RETURNING ob_id"""
    ).fetchall()
    for (ob_id,) in rows:
        log.warning("outbox message %s: its sender stopped while sending; not sent again "
                    "without a decision", ob_id)
    return [r[0] for r in rows]


def _claim(conn: psycopg.Connection, worker: str, lease: timedelta) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """UPDATE xtmail.outbox o
                  SET ob_state = 'sending', ob_claimed_by = %(worker)s,
                      ob_claimed_until = now() + %(lease)s,
                      ob_attempts = ob_attempts + 1,
                      ob_message_id = coalesce(ob_message_id, %(msgid)s)
                WHERE ob_id = (SELECT ob_id FROM xtmail.outbox
                                WHERE ob_state = 'queued' AND ob_next_attempt <= now()
                                ORDER BY ob_next_attempt, ob_id
                                LIMIT 1 FOR UPDATE SKIP LOCKED)
            RETURNING o.*""",
            {"worker": worker, "lease": lease, "msgid": make_msgid(domain="xtmail.invalid")},
        )
        return cur.fetchone()


def build_message(row: dict[str, Any]) -> EmailMessage:
    """The message a queue row stands for; the same bytes every attempt (its Message-ID was
    fixed at the first claim)."""
    message = EmailMessage(policy=SMTP)
    message["From"] = row["ob_from"]
    message["To"] = row["ob_to"]
    for header, column in (("Cc", "ob_cc"), ("Bcc", "ob_bcc"), ("Reply-To", "ob_reply_to")):
        if row[column].strip():
            message[header] = row[column]
    message["Subject"] = row["ob_subject"]
    message["Date"] = format_datetime(row["ob_submitted"])
    message["Message-ID"] = _message_id(row)
    if row["ob_html"]:
        message.set_content(row["ob_body"], subtype="html")
    else:
        message.set_content(row["ob_body"])
    if row["ob_filename"]:
        path = Path(row["ob_filename"])
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise _Permanent(
                f"the attachment {path} cannot be read ({exc.strerror or exc})") from exc
        kind, _ = mimetypes.guess_type(path.name)
        maintype, _, subtype = (kind or "application/octet-stream").partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=path.name)
    return message


def _message_id(row: dict[str, Any]) -> str:
    """The claim's placeholder domain replaced by the sender's, where it has one."""
    msgid = str(row["ob_message_id"])
    senders = _addresses(row["ob_from"])
    domain = senders[0].rpartition("@")[2] if senders else ""
    if "." in domain:
        msgid = msgid.replace("@xtmail.invalid>", f"@{domain}>")
    return msgid


def _addresses(text: str) -> list[str]:
    return [addr for _, addr in getaddresses([text]) if addr]


class _Permanent(Exception):
    """The message cannot be sent as it is: no retry helps."""


def _send_one(
    conn: psycopg.Connection, server: SmtpSettings, row: dict[str, Any], result: OutboxResult
) -> None:
    ob_id = row["ob_id"]
    try:
        message = build_message(row)
        refused = transmit(server, message)
    except _Permanent as exc:
        _give_up(conn, ob_id, str(exc), result)
        return
    except smtplib.SMTPAuthenticationError as exc:
        # The settings are wrong, not the message: it goes back as it was, and the run stops.
        conn.execute(
            """UPDATE xtmail.outbox SET ob_state = 'queued', ob_attempts = ob_attempts - 1,
                      ob_claimed_by = NULL, ob_claimed_until = NULL WHERE ob_id = %s""",
            (ob_id,),
        )
        raise AuthenticationFailed(
            f"The SMTP server {server.host} refused the login of {server.username!r}: "
            f"{exc.smtp_code} {_text(exc.smtp_error)}",
            hint="Check the SMTP user name and password; the queued mail waits.",
        ) from exc
    except smtplib.SMTPRecipientsRefused as exc:
        _give_up(conn, ob_id, f"every recipient was refused: {_refusals(exc.recipients)}",
                 result)
        return
    except smtplib.SMTPResponseException as exc:
        reason = f"{exc.smtp_code} {_text(exc.smtp_error)}"
        if exc.smtp_code >= 500:
            _give_up(conn, ob_id, f"the server refused it: {reason}", result)
        else:
            _retry_later(conn, row, f"the server asked to try later: {reason}", result)
        return
    except (smtplib.SMTPException, OSError) as exc:  # unreachable, dropped, TLS failed
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        _retry_later(conn, row, f"could not reach {server.host}:{server.port} ({reason})",
                     result)
        return
    note = f"refused for some recipients: {_refusals(refused)}" if refused else None
    with conn.transaction():
        eml_id = record_sent_mail(
            conn, message.as_bytes(policy=SMTP),
            policy=ImportPolicy.build(own_addresses=_addresses(row["ob_from"])),
        )
        conn.execute(
            """UPDATE xtmail.outbox SET ob_state = 'sent', ob_sent = now(), ob_eml_id = %s,
                      ob_last_error = %s, ob_claimed_until = NULL
                WHERE ob_id = %s""",
            (eml_id or None, note, ob_id),  # None: kept out by a removal or a block
        )
    result.sent.append(ob_id)


def _retry_later(
    conn: psycopg.Connection, row: dict[str, Any], reason: str, result: OutboxResult
) -> None:
    attempts = int(row["ob_attempts"])
    if attempts >= MAX_ATTEMPTS:
        _give_up(conn, row["ob_id"], f"{reason} (gave up after {attempts} attempts)", result)
        return
    delay = min(RETRY_FIRST * 2 ** (attempts - 1), RETRY_CAP)
    conn.execute(
        """UPDATE xtmail.outbox SET ob_state = 'queued', ob_next_attempt = now() + %s,
                  ob_last_error = %s, ob_claimed_by = NULL, ob_claimed_until = NULL
            WHERE ob_id = %s""",
        (delay, reason, row["ob_id"]),
    )
    log.info("outbox message %s: %s; next attempt in %s", row["ob_id"], reason, delay)
    result.retrying.append(row["ob_id"])


def _give_up(conn: psycopg.Connection, ob_id: int, reason: str, result: OutboxResult) -> None:
    conn.execute(
        """UPDATE xtmail.outbox SET ob_state = 'dead', ob_last_error = %s,
                  ob_claimed_by = NULL, ob_claimed_until = NULL
            WHERE ob_id = %s""",
        (reason, ob_id),
    )
    log.warning("outbox message %s not sent: %s", ob_id, reason)
    result.dead.append(ob_id)


def _refusals(recipients: Mapping[str, tuple[int, bytes | str]]) -> str:
    return "; ".join(f"{addr} ({code} {_text(text)})" for addr, (code, text) in
                     sorted(recipients.items()))


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
