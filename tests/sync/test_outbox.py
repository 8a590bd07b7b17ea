"""The ERP's own outgoing mail without Connect: xTuple's submitEmailToBatch queues it, the
sender delivers it over a real SMTP server once, and records it tied to its documents."""

from __future__ import annotations

import email
import email.policy
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.helpers.maildata import MailData
from tests.helpers.postgres import TestDatabases
from tests.helpers.smtp import SmtpServer
from tests.helpers.xtuple import create_connect_tables, create_user, ensure_xtrole
from xtmail.sync.db.schema import migrate
from xtmail.sync.errors import AuthenticationFailed
from xtmail.sync.outbox import requeue, send_queued
from xtmail.sync.outgoing import SmtpSettings

CLERK = "outbox_clerk"
SUBMIT = "SELECT xtbatch.submitEmailToBatch(%s, %s, %s, %s, %s, %s, now(), %s)"
SUBMIT_10 = "SELECT xtbatch.submitEmailToBatch(%s, %s, %s, %s, %s, %s, now(), %s, %s, %s)"


@pytest.fixture
def clerk_dsn(db_dsn: str, databases: TestDatabases) -> str:
    with databases.admin() as admin:
        create_user(admin, CLERK)
    return psycopg.conninfo.make_conninfo(db_dsn, user=CLERK)


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    with SmtpServer(tmp_path, refuse=["gone@example.com"]) as server:
        yield server


def settings(server: SmtpServer) -> SmtpSettings:
    return SmtpSettings(server.host, server.port, security="none", timeout=5)


def submit(dsn: str, to: str = "Ada <ada@example.com>", subject: str = "Hello",
           body: str = "Body", **extra: str | None) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if extra:
            row = conn.execute(SUBMIT_10, ("Sales <sales@ourco.example>", to, "", subject,
                                           body, None, False, extra.get("reply_to"),
                                           extra.get("bcc"))).fetchone()
        else:
            row = conn.execute(SUBMIT, ("Sales <sales@ourco.example>", to, "", subject, body,
                                        None, False)).fetchone()
    assert row is not None
    return int(row[0])


def state(conn: psycopg.Connection, ob_id: int) -> tuple[str, int, str | None]:
    row = conn.execute("SELECT ob_state, ob_attempts, ob_last_error FROM xtmail.outbox "
                       "WHERE ob_id = %s", (ob_id,)).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def test_mail_xtuple_queues_is_sent_once_and_recorded_with_its_ties(
    conn: psycopg.Connection, clerk_dsn: str, smtp: SmtpServer, mail_data: MailData
) -> None:
    order = mail_data.sales_order("50123")
    # An ordinary user queues it, the way xTuple's alarms and purchase approvals do.
    ob_id = submit(clerk_dsn, subject="Order 50123 approved [xtref:S-50123]",
                   body="Approved.", bcc="archive@ourco.example", reply_to=None)
    result = send_queued(conn, settings(smtp))
    assert result.sent == [ob_id] and not result.dead and not result.retrying
    (received,) = smtp.received
    assert received.rcpt_tos == ("ada@example.com", "archive@ourco.example")
    delivered = email.message_from_bytes(received.data, policy=email.policy.default)
    assert "Bcc" not in delivered
    assert delivered["Message-ID"].endswith("@ourco.example>")
    eml_id = conn.execute("SELECT ob_eml_id FROM xtmail.outbox WHERE ob_id = %s",
                          (ob_id,)).fetchone()
    assert eml_id is not None and eml_id[0] is not None
    ties = conn.execute("SELECT emlassc_type, emlassc_assc_id FROM xtbatch.emlassc "
                        "WHERE emlassc_eml_id = %s", (eml_id[0],)).fetchall()
    assert ("S", order) in ties
    source = conn.execute("SELECT msg_source, msg_message_id FROM xtmail.msg "
                          "WHERE msg_eml_id = %s", eml_id).fetchone()
    assert source == ("erp", delivered["Message-ID"].strip("<>"))
    # Run again: nothing is sent twice.
    assert send_queued(conn, settings(smtp)).sent == []
    assert len(smtp.received) == 1


def test_ordinary_users_cannot_read_the_queue(clerk_dsn: str) -> None:
    submit(clerk_dsn)
    with psycopg.connect(clerk_dsn, autocommit=True) as conn, \
            pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM xtmail.outbox")


def test_every_recipient_refused_is_dead_with_the_reason(
    conn: psycopg.Connection, db_dsn: str, smtp: SmtpServer
) -> None:
    ob_id = submit(db_dsn, to="gone@example.com")
    result = send_queued(conn, settings(smtp))
    assert result.dead == [ob_id]
    status, attempts, error = state(conn, ob_id)
    assert (status, attempts) == ("dead", 1)
    assert error and "gone@example.com (550 5.1.1 No such user here)" in error
    assert conn.execute("SELECT count(*) FROM xtbatch.eml").fetchone() == (0,)
    # A person decides to send it again.
    assert requeue(conn, ob_id)
    assert state(conn, ob_id)[0] == "queued"


def test_a_server_that_is_down_is_retried_later(
    conn: psycopg.Connection, db_dsn: str, tmp_path: Path
) -> None:
    down = SmtpServer(tmp_path)  # not started yet: nothing listens on its port
    ob_id = submit(db_dsn)
    result = send_queued(conn, settings(down))
    assert result.retrying == [ob_id]
    status, attempts, error = state(conn, ob_id)
    assert (status, attempts) == ("queued", 1)
    assert error and "Connection refused" in error
    waits = conn.execute("SELECT ob_next_attempt > now() + interval '50 seconds' "
                         "FROM xtmail.outbox WHERE ob_id = %s", (ob_id,)).fetchone()
    assert waits == (True,)
    # Not due yet: another pass does not try it.
    assert send_queued(conn, settings(down)).retrying == []
    # Due again and the server is up: sent.
    conn.execute("UPDATE xtmail.outbox SET ob_next_attempt = now()")
    with down:
        assert send_queued(conn, settings(down)).sent == [ob_id]
    assert len(down.received) == 1


def test_a_sender_that_died_while_sending_leaves_it_uncertain(
    conn: psycopg.Connection, db_dsn: str, smtp: SmtpServer
) -> None:
    ob_id = submit(db_dsn)
    # What a sender killed between claiming and recording leaves behind.
    conn.execute("UPDATE xtmail.outbox SET ob_state = 'sending', ob_attempts = 1, "
                 "ob_claimed_by = 'host-a:1', ob_claimed_until = now() - interval '1 s'")
    result = send_queued(conn, settings(smtp))
    assert result.uncertain == [ob_id] and result.sent == []
    assert smtp.received == []
    status, _, error = state(conn, ob_id)
    assert status == "uncertain" and error and "host-a:1" in error


def test_two_senders_at_once_send_each_message_once(
    db_dsn: str, smtp: SmtpServer
) -> None:
    queued = [submit(db_dsn, subject=f"Message {i}") for i in range(20)]
    sent: list[int] = []
    lock = threading.Lock()

    def sender(name: str) -> None:
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            result = send_queued(conn, settings(smtp), worker=name)
        with lock:
            sent.extend(result.sent)

    threads = [threading.Thread(target=sender, args=(f"w{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(sent) == queued
    subjects = sorted(email.message_from_bytes(r.data)["Subject"] for r in smtp.received)
    assert subjects == sorted(f"Message {i}" for i in range(20))


def test_connects_own_function_is_left_alone(databases: TestDatabases) -> None:
    dsn = databases.create(migrated=False)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            ensure_xtrole(conn)
            create_connect_tables(conn)
            conn.execute(
                """CREATE FUNCTION xtbatch.submitemailtobatch(text, text, text, text, text,
                       text, timestamptz, boolean) RETURNS integer LANGUAGE sql
                   AS 'SELECT 4711'""")
            migrate(conn)
            assert conn.execute(SUBMIT, ("a@x.example", "b@y.example", "", "s", "b", None,
                                         False)).fetchone() == (4711,)
            assert conn.execute("SELECT count(*) FROM xtmail.outbox").fetchone() == (0,)
    finally:
        databases.drop(dsn)


def test_a_refused_login_stops_the_run_and_the_mail_waits(
    conn: psycopg.Connection, db_dsn: str, tmp_path: Path
) -> None:
    ob_id = submit(db_dsn)
    with SmtpServer(tmp_path, security="starttls", users={"erp": "right"}) as server:
        wrong = SmtpSettings(server.host, server.port, username="erp", password="wrong",
                             ssl_context=server.ssl_context(), timeout=5)
        with pytest.raises(AuthenticationFailed) as caught:
            send_queued(conn, wrong)
        assert "Check the SMTP user name and password" in caught.value.user_text()
        assert state(conn, ob_id)[:2] == ("queued", 0)
        right = SmtpSettings(server.host, server.port, username="erp", password="right",
                             ssl_context=server.ssl_context(), timeout=5)
        assert send_queued(conn, right).sent == [ob_id]
