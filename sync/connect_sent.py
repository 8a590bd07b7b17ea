"""What xTuple Connect's batch manager sent, recorded as the ERP's sent mail (docs/outbox.md).

Where Connect is installed, xTuple's ``submitEmailToBatch`` is Connect's: it queues the mail
in ``xtbatch.batch`` and Connect's batch manager (a program of its own) sends it, then sets
``batch_completed`` and leaves ``batch_exitstatus`` blank, or describes the failure there.
:func:`record_connect_sent` records each completed, successful ``Email`` row once, through
the same engine as other sent mail (:func:`~xtmail.sync.outgoing.record_sent_mail`), so it
is tied to the documents its subject and body reference and to its contacts.

The batch manager's own message is not known (its Message-ID, its exact bytes): the record
is rebuilt from the row, marked as such (the ``X-Xtmail-Reconstructed`` header and the
source ``connect-batch``), with a Message-ID of its own derived from the row, so that
rebuilding the same row gives the same message.

Exactly once: the ledger row of a batch (``xtmail.connect_sent``, primary key the batch id)
is inserted in the same transaction as its record. Several ``xtmail serve`` instances take
turns through a session advisory lock (one records while the others skip the pass); the
primary key would refuse a second record even without it. Failed rows get no ledger row,
so a row the batch manager completes successfully later is recorded on a later pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, getaddresses
from typing import Any

import psycopg
from psycopg.rows import dict_row

from xtmail.sync.outgoing import record_sent_mail
from xtmail.sync.values import ImportPolicy

log = logging.getLogger(__name__)

#: The advisory lock the recorders take turns with: ("xtcs", 1), a class of its own beside
#: the accounts' ("xtma", hashtext(account)).
LOCK_KEYS = (0x78746373, 1)
#: The source of the records in ``xtmail.msg`` (imported mail: ``imap``; the outbox: ``erp``).
SOURCE = "connect-batch"
#: The header that marks a record as rebuilt from a batch row.
MARKER = "X-Xtmail-Reconstructed"


@dataclass
class ConnectSentResult:
    """What one pass did: batch ids recorded (with their ``eml_id``; 0 when a removal or a
    blocked sender keeps the mail out), and whether another instance was recording."""

    recorded: dict[int, int] = field(default_factory=dict)
    busy: bool = False  # another recorder holds the turn: nothing done this time
    in_charge: bool = True  # False: Connect is not installed, nothing to record


def connect_in_charge(conn: psycopg.Connection) -> bool:
    """Whether Connect's batch manager sends the ERP's mail here (migration 0014)."""
    row = conn.execute("SELECT xtmail.connect_in_charge()").fetchone()
    return bool(row and row[0])


def record_connect_sent(conn: psycopg.Connection, *, limit: int = 200) -> ConnectSentResult:
    """Record up to ``limit`` email batch rows the batch manager completed successfully and
    that are not recorded yet; ``conn`` is in autocommit mode."""
    result = ConnectSentResult()
    if not connect_in_charge(conn):
        result.in_charge = False
        return result
    row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", LOCK_KEYS).fetchone()
    if not (row and row[0]):
        result.busy = True
        return result
    try:
        for batch in _pending(conn, limit):
            with conn.transaction():
                if not _claim(conn, batch):
                    continue  # recorded meanwhile (an instance without the lock's turn)
                eml_id = record_sent_mail(conn, reconstruct(batch), policy=_policy(batch),
                                          source=SOURCE)
                conn.execute(
                    "UPDATE xtmail.connect_sent SET cs_eml_id = %s WHERE cs_batch_id = %s",
                    (eml_id or None, batch["batch_id"]))
            result.recorded[int(batch["batch_id"])] = eml_id
    finally:
        if not conn.closed and not conn.broken:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", LOCK_KEYS)
    if result.recorded:
        log.info("recorded %d mail(s) Connect's batch manager sent", len(result.recorded))
    return result


def _pending(conn: psycopg.Connection, limit: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """SELECT b.batch_id, b.batch_user, b.batch_email, b.batch_cc, b.batch_bcc,
                      b.batch_fromemail, b.batch_replyto, b.batch_subject,
                      b.batch_responsebody, b.batch_filename, b.batch_emailhtml::text AS html,
                      b.batch_submitted::timestamptz AS submitted,
                      b.batch_completed::timestamptz AS completed
                 FROM xtbatch.batch b
                WHERE b.batch_action = 'Email'
                  AND b.batch_completed IS NOT NULL
                  AND coalesce(btrim(b.batch_exitstatus), '') = ''
                  AND NOT EXISTS (SELECT 1 FROM xtmail.connect_sent s
                                   WHERE s.cs_batch_id = b.batch_id)
                ORDER BY b.batch_completed, b.batch_id
                LIMIT %s""",
            (limit,))
        return cur.fetchall()


def _claim(conn: psycopg.Connection, batch: dict[str, Any]) -> bool:
    """The ledger row, in the record's transaction: False when another has it."""
    row = conn.execute(
        """INSERT INTO xtmail.connect_sent (cs_batch_id, cs_completed) VALUES (%s, %s)
           ON CONFLICT (cs_batch_id) DO NOTHING RETURNING cs_batch_id""",
        (batch["batch_id"], batch["completed"])).fetchone()
    return row is not None


def _addresses(text: str | None) -> str:
    """xTuple's address lists are separated by commas or semicolons."""
    return ", ".join(part.strip() for part in (text or "").replace(";", ",").split(",")
                     if part.strip())


def _policy(batch: dict[str, Any]) -> ImportPolicy:
    senders = [addr for _, addr in getaddresses([batch["batch_fromemail"] or ""]) if addr]
    return ImportPolicy.build(own_addresses=senders)


def reconstruct(batch: dict[str, Any]) -> bytes:
    """The message a completed batch row stands for, as it is recorded: the same bytes every
    time for the same row."""
    message = EmailMessage(policy=SMTP)
    sender = (batch["batch_fromemail"] or "").strip()
    if sender:
        message["From"] = sender
    for header, column in (("To", "batch_email"), ("Cc", "batch_cc"), ("Bcc", "batch_bcc"),
                           ("Reply-To", "batch_replyto")):
        value = _addresses(batch[column])
        if value:
            message[header] = value
    message["Subject"] = batch["batch_subject"] or ""
    sent: datetime = batch["completed"]
    message["Date"] = format_datetime(sent)
    submitted: datetime | None = batch["submitted"]
    stamp = int((submitted or sent).timestamp())
    message["Message-ID"] = f"<xtbatch.batch.{batch['batch_id']}.{stamp}@xtmail.invalid>"
    message[MARKER] = (f"xtbatch.batch {batch['batch_id']}, sent by xTuple Connect's batch "
                       "manager; its own Message-ID is not known")
    if batch["batch_user"]:
        message["X-Xtmail-Submitted-By"] = batch["batch_user"]
    if batch["batch_filename"]:
        # The file was on the batch manager's machine: named, not attached.
        message["X-Xtmail-Attachment-Name"] = batch["batch_filename"]
    body = batch["batch_responsebody"] or ""
    html = (batch["html"] or "").lower() in {"t", "true", "1", "y", "yes"}
    message.set_content(body, subtype="html" if html else "plain")
    return message.as_bytes(policy=SMTP)
